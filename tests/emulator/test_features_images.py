"""Extension image catalogue, preview features and resource providers through the real SDK clients."""
import time

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from emulator_clients import LOCATION, compute, features, resources
from emulator_control import EmulatorError


def test_extension_images(emulator):
    images = compute(emulator).virtual_machine_extension_images
    types = {t.name for t in images.list_types(LOCATION, "microsoft.azure.extensions")}
    assert types == {"CustomScript"}
    versions = [v.name for v in images.list_versions(LOCATION, "Microsoft.Azure.Extensions", "customscript")]
    assert versions == ["2.0.2", "2.0.3", "2.1.10", "2.1.6"]  # ARM orders version names as strings
    newest = images.list_versions(LOCATION, "Microsoft.Azure.Extensions", "CustomScript",
                                  filter="startswith(name,'2.1')", orderby="name desc", top=1)
    assert [v.name for v in newest] == ["2.1.6"]
    image = images.get(LOCATION, "Microsoft.Compute", "BGInfo", "2.2.5")
    assert image.name == "2.2.5" and image.properties.operating_system == "Windows"
    with pytest.raises(ResourceNotFoundError):
        images.get(LOCATION, "Microsoft.Compute", "BGInfo", "9.9")


def test_feature_registration(emulator):
    emulator.settings(feature_registration_s=0.3)
    client = features(emulator)
    feature = client.features.get("Microsoft.Compute", "AutomaticExtensionUpgradePreview")
    assert feature.properties.state == "NotRegistered"
    assert feature.name == "Microsoft.Compute/AutomaticExtensionUpgradePreview"
    assert client.features.register("Microsoft.Compute", "AutomaticExtensionUpgradePreview").properties.state \
        == "Registering"
    time.sleep(0.35)
    assert client.features.get("Microsoft.Compute", "AutomaticExtensionUpgradePreview").properties.state \
        == "Registered"
    assert client.features.unregister("Microsoft.Compute", "EncryptionAtHost").properties.state == "Unregistering"
    with pytest.raises(HttpResponseError) as exc:
        client.features.get("Microsoft.Compute", "NoSuchFeature")
    assert exc.value.status_code == 404 and exc.value.error.code == "FeatureNotFound"
    emulator.settings(page_size=1)
    assert len(list(client.features.list_all())) == 3
    assert {f.name for f in client.features.list("Microsoft.Compute")} == {
        "Microsoft.Compute/AutomaticExtensionUpgradePreview", "Microsoft.Compute/EncryptionAtHost"}


def test_provider_registration(emulator):
    emulator.settings(provider_registration_s=0.2)
    client = resources(emulator)
    assert client.providers.get("Microsoft.Compute").registration_state == "Registered"
    assert client.providers.unregister("Microsoft.Network").registration_state == "Unregistering"
    time.sleep(0.25)
    assert client.providers.get("Microsoft.Network").registration_state == "Unregistered"
    assert client.providers.register("Microsoft.Network").registration_state == "Registering"
    time.sleep(0.25)
    assert client.providers.get("microsoft.network").registration_state == "Registered"


def test_hold_registrations_keeps_the_transition_until_released(emulator):
    emulator.settings(feature_registration_s=0, provider_registration_s=0, hold_registrations=True)
    client = features(emulator)
    assert client.features.register("Microsoft.Compute", "AutomaticExtensionUpgradePreview").properties.state \
        == "Registering"
    assert client.features.get("Microsoft.Compute", "AutomaticExtensionUpgradePreview").properties.state \
        == "Registering"
    providers = resources(emulator).providers
    assert providers.unregister("Microsoft.Network").registration_state == "Unregistering"
    assert providers.get("Microsoft.Network").registration_state == "Unregistering"
    assert emulator.settings(hold_registrations=False)["hold_registrations"] is False
    assert client.features.get("Microsoft.Compute", "AutomaticExtensionUpgradePreview").properties.state \
        == "Registered"
    assert providers.get("Microsoft.Network").registration_state == "Unregistered"
    with pytest.raises(EmulatorError):
        emulator.settings(hold_registrations=1)
