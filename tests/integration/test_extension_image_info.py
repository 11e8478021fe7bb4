"""extension_image_info against the emulator's image catalogue (the default seed's westeurope catalogue)."""
from harness import playbook


def info(title, **options):
    args = dict(location="westeurope", publisher="Microsoft.Azure.Extensions")
    args.update(options)
    return {"name": title, "azure_vm.extensions.extension_image_info": args, "register": "out"}


def test_types_versions_latest_and_prefix(run_playbook, emulator):
    run = run_playbook(playbook(
        info("all types"),
        info("one type", type="CustomScript"),
        info("prefix", type="CustomScript", version="2.0", query="images[0].latest"),
        info("publisher with several types", publisher="Microsoft.Compute"),
    ), expect_rc=0)
    assert run.task("all types")["images"] == [{"publisher": "Microsoft.Azure.Extensions", "type": "CustomScript",
                                                "versions": ["2.0.2", "2.0.3", "2.1.6", "2.1.10"],
                                                "latest": "2.1.10"}]
    # numeric, not string order: 2.1.10 is the newest
    assert run.task("one type")["images"][0]["latest"] == "2.1.10"
    assert run.task("prefix")["images"][0]["versions"] == ["2.0.2", "2.0.3"]
    assert run.task("prefix")["query_result"] == "2.0.3"
    several = {image["type"]: image["latest"] for image in run.task("publisher with several types")["images"]}
    assert several == {"BGInfo": "2.2.5", "CustomScriptExtension": "1.10.12"}
    assert emulator.writes() == []


def test_unknown_type_fails_with_the_azure_error(run_playbook, emulator):
    run = run_playbook(playbook(info("missing", type="NoSuchExtension")))
    result = run.task("missing")
    assert result["failed"] is True
    assert "listing extension images of Microsoft.Azure.Extensions in westeurope failed" in result["msg"]
    assert "NotFound" in result["msg"]
