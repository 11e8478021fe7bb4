"""The connection layer's auth sources, each against the emulator through the real ansible-playbook."""
import json

from harness import playbook

INFO = {"name": "info", "register": "info",
        "azure_vm.extensions.vm_extension_info": {"resource_group": "rg-demo", "vm_name": "vm-web-01"}}


def only(env, *keep):
    """The emulator's env with only the named AZURE_* variables kept (the rest are blanked)."""
    out = dict((key, "") for key in env if key.startswith("AZURE_"))
    out.update((key, env[key]) for key in keep)
    out["REQUESTS_CA_BUNDLE"] = env["REQUESTS_CA_BUNDLE"]
    return out


def token_requests(emulator):
    return [r for r in emulator.requests() if "/oauth2/" in r["path"] or r["path"].startswith("/msi/")]


def assert_read_vm(run):
    assert run.rc == 0, run.stdout[-3000:] + run.stderr[-2000:]
    info = run.task("info")
    assert [e["name"] for e in info["extensions"]] == ["customScript"]
    assert info["vm_agent"]["version"] == "2.9.1.1"


def test_awx_style_environment_variables(run_playbook, emulator):
    """Exactly what AWX's Azure credential injects: AZURE_SUBSCRIPTION_ID/CLIENT_ID/SECRET/TENANT + cloud."""
    run = run_playbook(playbook(INFO))
    assert_read_vm(run)
    assert token_requests(emulator)
    # The module's own reads (a straggler of an earlier test on this worker may share the log): our user agent.
    reads = [r for r in emulator.arm_requests() if "/virtualMachines/vm-web-01" in r["path"]]
    assert reads and all("azure_vm.extensions/" in (r["user_agent"] or "") for r in reads), [
        (r["path"], r["user_agent"]) for r in emulator.arm_requests()]


def test_module_options_only(run_playbook, emulator):
    env = emulator.env
    task = json.loads(json.dumps(INFO))
    task["azure_vm.extensions.vm_extension_info"].update(
        auth_source="options", client_id=env["AZURE_CLIENT_ID"], secret=env["AZURE_SECRET"],
        tenant=env["AZURE_TENANT"], subscription_id=env["AZURE_SUBSCRIPTION_ID"],
        cloud_environment=env["AZURE_CLOUD_ENVIRONMENT"], ca_bundle=env["REQUESTS_CA_BUNDLE"])
    run = run_playbook(playbook(task), env=only(env))
    assert_read_vm(run)


def test_module_defaults_action_group_sets_auth_once(run_playbook, emulator):
    env = emulator.env
    defaults = {"group/azure_vm.extensions.azure": dict(
        client_id=env["AZURE_CLIENT_ID"], secret=env["AZURE_SECRET"], tenant=env["AZURE_TENANT"],
        subscription_id=env["AZURE_SUBSCRIPTION_ID"], cloud_environment=env["AZURE_CLOUD_ENVIRONMENT"])}
    run = run_playbook(playbook(INFO, module_defaults=defaults), env=only(env))
    assert_read_vm(run)


def test_managed_identity(run_playbook, emulator):
    env = only(emulator.env, "AZURE_SUBSCRIPTION_ID", "AZURE_CLOUD_ENVIRONMENT")
    env.update(IDENTITY_ENDPOINT=emulator.msi_endpoint, IDENTITY_HEADER=emulator.msi_header)
    task = json.loads(json.dumps(INFO))
    task["azure_vm.extensions.vm_extension_info"]["auth_source"] = "msi"
    run = run_playbook(playbook(task), env=env)
    assert_read_vm(run)
    assert [r for r in emulator.requests() if r["path"].startswith("/msi/")]
    # auto picks managed identity when no service principal is configured.
    auto = run_playbook(playbook(INFO), env=env)
    assert_read_vm(auto)


def test_custom_cloud_from_metadata_url(run_playbook, emulator):
    run = run_playbook(playbook(INFO))
    assert_read_vm(run)
    metadata = [r for r in emulator.requests() if r["path"] == "/metadata/endpoints"]
    assert metadata, "the layer must read {url}/metadata/endpoints for a URL cloud_environment"


def test_wrong_secret_fails_clearly_without_leaking_it(run_playbook, emulator):
    env = dict(emulator.env, AZURE_SECRET="wrong-secret-value-42")
    run = run_playbook(playbook(INFO), env=env, verbosity=4)
    assert run.rc != 0
    assert "invalid_client" in run.stdout or "AADSTS7000215" in run.stdout
    assert "wrong-secret-value-42" not in run.stdout + run.stderr


def test_bad_cloud_environment_names_the_allowed_values(run_playbook, emulator):
    run = run_playbook(playbook(INFO), env={"AZURE_CLOUD_ENVIRONMENT": "AzureMoonCloud"})
    msg = run.task("info")["msg"]
    assert "cloud_environment must be one of AzureChinaCloud, AzureCloud, AzureUSGovernment" in msg
    assert emulator.arm_requests() == []
