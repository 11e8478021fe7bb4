"""What the Azure CLI 2.91 asks that the emulator did not answer as Azure does (issue 25): each test failed on the
emulator before the fix, and holds the source it is based on (tests/data/reference/issue-25.md and the REST
examples in tests/data/arm-examples)."""
import json
from pathlib import Path

import pytest
from azure.core.exceptions import HttpResponseError

from emulator_clients import LOCATION, RG, compute, raw, vm_path

DATA = Path(__file__).resolve().parents[1] / "data" / "arm-examples"
SUB_ID = "6f3a8c1e-0000-4000-8000-000000000001"
TENANT = "6f3a8c1e-0000-4000-8000-0000000000aa"
CS = {"location": LOCATION, "properties": {
    "publisher": "Microsoft.Azure.Extensions", "type": "CustomScript", "typeHandlerVersion": "2.1",
    "settings": {"commandToExecute": "echo cli"}}}


def _example(path):
    return json.loads((DATA / path).read_text())["responses"]["200"]["body"]


@pytest.fixture
def quick(emulator):
    emulator.settings(handler_duration_s=0.05, delete_duration_s=0.05)
    return emulator


# --- 1. az login --service-principal: GET /subscriptions ------------------------------------------------------
def test_subscriptions_list_and_get_answer_the_callers_subscription(emulator):
    status, dummy, body = raw(emulator, "GET", "/subscriptions", query="api-version=2022-12-01")
    assert status == 200
    example = _example("resources/subscriptions-2019-11-01/GetSubscriptions.json")["value"][0]
    assert body == {"value": [{
        "id": f"/subscriptions/{SUB_ID}", "subscriptionId": SUB_ID, "tenantId": TENANT,
        "displayName": "Emulator Subscription", "state": "Enabled",
        "subscriptionPolicies": example["subscriptionPolicies"], "authorizationSource": "RoleBased",
        "managedByTenants": []}]}
    assert set(body["value"][0]) == set(example) - {"tags"}
    status, dummy, one = raw(emulator, "GET", f"/subscriptions/{SUB_ID}", query="api-version=2022-12-01")
    assert status == 200 and one == body["value"][0]
    assert set(one) == set(_example("resources/subscriptions-2021-01-01/GetSubscription.json")) - {"tags"}
    # A version the subscriptions API does not have is refused as ARM refuses its own types' versions.
    status, dummy, bad = raw(emulator, "GET", "/subscriptions", query="api-version=2025-04-01")
    assert status == 400 and bad["error"]["code"] == "InvalidApiVersionParameter"
    assert "2022-12-01" in bad["error"]["message"]


def test_subscriptions_list_shows_only_the_callers_subscriptions(tmp_path):
    """Two tenants: each principal sees its own subscription only (Azure lists what the caller has a role in)."""
    import yaml
    from emulator_control import Emulator

    seed = yaml.safe_load((Path(__file__).parent / "default-seed.yml").read_text())
    other = json.loads(json.dumps(seed["subscriptions"][0]))
    other.update(id="6f3a8c1e-0000-4000-8000-000000000002", tenant="6f3a8c1e-0000-4000-8000-0000000000bb",
                 name="Other", service_principals=[{"client_id": "6f3a8c1e-0000-4000-8000-0000000000c2",
                                                    "secret": "other-secret"}], managed_identities=[])
    seed["subscriptions"].append(other)
    (tmp_path / "seed.yml").write_text(yaml.safe_dump(seed))
    emu = Emulator.start(str(tmp_path / "emu"), seed=str(tmp_path / "seed.yml"))
    try:
        status, dummy, body = raw(emu, "GET", "/subscriptions", query="api-version=2022-12-01")
        assert status == 200 and [s["subscriptionId"] for s in body["value"]] == [SUB_ID]
        # the other tenant's principal
        emu.env.update(AZURE_TENANT=other["tenant"], AZURE_CLIENT_ID="6f3a8c1e-0000-4000-8000-0000000000c2",
                       AZURE_SECRET="other-secret")
        status, dummy, body = raw(emu, "GET", "/subscriptions", query="api-version=2022-12-01")
        assert status == 200 and [(s["subscriptionId"], s["tenantId"], s["displayName"]) for s in body["value"]] \
            == [(other["id"], other["tenant"], "Other")]
    finally:
        emu.stop()


# --- 2. az vm extension image list / set without --version: the region's publishers ---------------------------
def test_image_publishers_of_a_region(emulator):
    client = compute(emulator)
    publishers = client.virtual_machine_images.list_publishers(LOCATION)
    assert [p.name for p in publishers] == ["Microsoft.Azure.Diagnostics", "Microsoft.Azure.Extensions",
                                            "Microsoft.Azure.Monitor", "Microsoft.Compute",
                                            "Microsoft.OSTCExtensions", "Microsoft.Powershell"]
    status, dummy, body = raw(emulator, "GET", f"/subscriptions/{SUB_ID}/providers/Microsoft.Compute/locations/"
                                               f"{LOCATION}/publishers")
    assert status == 200 and isinstance(body, list)  # a bare array, as the REST example
    example = _example("compute-2026-04-01/virtualMachineImageExamples/"
                       "VirtualMachineImage_ListPublishers_MaximumSet_Gen.json")[0]
    assert set(body[0]) == {"name", "location", "id"} <= set(example)
    assert body[1] == {"name": "Microsoft.Azure.Extensions", "location": LOCATION,
                       "id": f"/Subscriptions/{SUB_ID}/Providers/Microsoft.Compute/Locations/{LOCATION}/Publishers/"
                             "Microsoft.Azure.Extensions"}
    # each listed publisher's extension types are served (what the CLI reads next)
    for publisher in publishers:
        assert list(client.virtual_machine_extension_images.list_types(LOCATION, publisher.name))


# --- 3. az vmss update-instances --instance-ids '*' -----------------------------------------------------------
def test_manual_upgrade_star_means_every_instance(quick):
    client = compute(quick)
    client.virtual_machine_scale_set_extensions.begin_create_or_update(
        RG, "vmss-manual", "cs", {"properties": CS["properties"]}).result()
    assert not any(vm.latest_model_applied for vm in client.virtual_machine_scale_set_vms.list(RG, "vmss-manual"))
    client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-manual", {"instanceIds": ["*"]}).result()
    instances = list(client.virtual_machine_scale_set_vms.list(RG, "vmss-manual", expand="instanceView"))
    assert [vm.instance_id for vm in instances] == ["0", "1", "2", "3", "4"]
    assert all(vm.latest_model_applied for vm in instances)
    assert [vm.instance_view.extensions[0].statuses[0].code for vm in instances] == \
        ["ProvisioningState/succeeded"] * 5
    # Repeated: every instance already runs the model, no handler runs again.
    runs = len(quick.handler_runs())
    client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-manual", {"instanceIds": ["*"]}).result()
    assert len(quick.handler_runs()) == runs == 5
    # An id that is not an instance is still refused.
    with pytest.raises(HttpResponseError, match="The provided instanceId 7 is not an active"):
        client.virtual_machine_scale_sets.begin_update_instances(RG, "vmss-manual", {"instanceIds": ["7"]})


# --- 4. az vmss get-instance-view --instance-id '*': $select=instanceView ------------------------------------
def _instances_path(vmss):
    return f"/subscriptions/{SUB_ID}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/" \
           f"{vmss}/virtualMachines"


def test_select_instance_view_returns_the_instance_views_alone(quick):
    client = compute(quick)
    client.virtual_machine_scale_set_extensions.begin_create_or_update(
        RG, "vmss-auto", "cs", {"properties": CS["properties"]}).result()
    status, dummy, body = raw(quick, "GET", _instances_path("vmss-auto"),
                              query="api-version=2024-11-01&$select=instanceView&$expand=instanceView")
    assert status == 200 and len(body["value"]) == 3
    for item in body["value"]:
        assert list(item) == ["properties"] and list(item["properties"]) == ["instanceView"]
        view = item["properties"]["instanceView"]
        assert view["extensions"][0]["name"] == "cs" and view["vmAgent"]["vmAgentVersion"] == "2.9.1.1"
    # the same instance view the single-instance call answers
    status, dummy, single = raw(quick, "GET", _instances_path("vmss-auto") + "/0/instanceView",
                                query="api-version=2024-11-01")
    selected = body["value"][0]["properties"]["instanceView"]
    assert (selected["computerName"], selected["extensions"]) == (single["computerName"], single["extensions"])
    status, dummy, statuses = raw(quick, "GET", _instances_path("vmss-auto"),
                                  query="api-version=2024-11-01&$select=instanceView/statuses")
    assert status == 200 and [list(i["properties"]["instanceView"]) for i in statuses["value"]] == [["statuses"]] * 3
    # The SDK reads it too: the model view is absent (no name, no resources).
    listed = list(client.virtual_machine_scale_set_vms.list(RG, "vmss-auto", select="instanceView",
                                                            expand="instanceView"))
    assert [vm.name for vm in listed] == [None] * 3 and all(vm.resources is None for vm in listed)
    assert [vm.instance_view.extensions[0].statuses[0].code for vm in listed] == ["ProvisioningState/succeeded"] * 3
    # Without $select the model view (with resources[]) is unchanged.
    status, dummy, full = raw(quick, "GET", _instances_path("vmss-auto"), query="api-version=2024-11-01")
    assert full["value"][0]["name"] == "vmss-auto_0" and full["value"][0]["resources"][0]["name"] == "cs"


def test_select_other_values_are_refused(emulator):
    status, dummy, body = raw(emulator, "GET", _instances_path("vmss-auto"),
                              query="api-version=2024-11-01&$select=name")
    assert status == 400 and body["error"]["code"] == "InvalidParameter" and body["error"]["target"] == "$select"
    assert "'instanceView', 'instanceView/statuses'" in body["error"]["message"]


# --- 5. az provider register / show: Microsoft.Resources 2024-07-01, 2024-11-01, 2025-03-01 ------------------
@pytest.mark.parametrize("version", ["2024-07-01", "2024-11-01", "2025-03-01"])
def test_resources_api_versions_of_azure_mgmt_resource_24(emulator, version):
    query = f"api-version={version}"
    status, dummy, body = raw(emulator, "GET", f"/subscriptions/{SUB_ID}/providers/Microsoft.Compute", query=query)
    assert status == 200 and body["registrationState"] == "Registered"
    status, dummy, body = raw(emulator, "POST", f"/subscriptions/{SUB_ID}/providers/Microsoft.Network/register",
                              query=query)
    assert status == 200 and body["namespace"] == "Microsoft.Network" and body["registrationState"] == "Registered"
    status, dummy, body = raw(emulator, "GET", f"/subscriptions/{SUB_ID}/resourceGroups/{RG}", query=query)
    assert status == 200 and body["name"] == RG


# --- 6. an invalid typeHandlerVersion is refused --------------------------------------------------------------
INVALID_VERSION = {"error": {"code": "InvalidParameter",
                             "message": "The value of parameter typeHandlerVersion is invalid.",
                             "target": "typeHandlerVersion"}}


@pytest.mark.parametrize("version", ["abc", "2", "2.1.6", "1.9.5", "2.x", ""])
def test_invalid_type_handler_version_is_refused_before_anything_changes(quick, version):
    body = json.loads(json.dumps(CS))
    body["properties"]["typeHandlerVersion"] = version
    status, dummy, answer = raw(quick, "PUT", vm_path(quick, "vm-web-02", "/extensions/cs"), body)
    expected = (400, INVALID_VERSION) if version else (400, {"error": {
        "code": "BadRequest", "message": "Required property 'properties.typeHandlerVersion' is missing from the "
                                         "request.", "target": "properties.typeHandlerVersion"}})
    assert (status, answer) == expected
    status, dummy, dummy = raw(quick, "GET", vm_path(quick, "vm-web-02", "/extensions/cs"))
    assert status == 404 and quick.handler_runs() == []


def test_invalid_type_handler_version_on_patch_and_scale_sets(quick):
    client = compute(quick)
    client.virtual_machine_extensions.begin_create_or_update(RG, "vm-web-02", "cs", CS).result()
    status, dummy, answer = raw(quick, "PATCH", vm_path(quick, "vm-web-02", "/extensions/cs"),
                                {"properties": {"typeHandlerVersion": "abc"}})
    assert (status, answer) == (400, INVALID_VERSION)
    assert client.virtual_machine_extensions.get(RG, "vm-web-02", "cs").type_handler_version == "2.1"
    ss_ext = f"/subscriptions/{SUB_ID}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/" \
             "vmss-manual/extensions/cs"
    bad = {"properties": dict(CS["properties"], typeHandlerVersion="abc")}
    status, dummy, answer = raw(quick, "PUT", ss_ext, bad)
    assert (status, answer) == (400, INVALID_VERSION)
    # the scale-set model written through the scale set itself (az vmss extension set does this)
    model = client.virtual_machine_scale_sets.get(RG, "vmss-manual").as_dict()
    model["properties"]["virtualMachineProfile"]["extensionProfile"] = {"extensions": [
        {"name": "cs", "properties": bad["properties"]}]}
    with pytest.raises(HttpResponseError, match="The value of parameter typeHandlerVersion is invalid"):
        client.virtual_machine_scale_sets.begin_create_or_update(RG, "vmss-manual", model)
    assert client.virtual_machine_scale_sets.get(RG, "vmss-manual").virtual_machine_profile.extension_profile \
        .extensions == []
    assert len(quick.handler_runs()) == 1  # the valid VM extension's create only
