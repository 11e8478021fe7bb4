"""Microsoft.Features preview features and Microsoft.Resources provider registration.

Neither is long-running in ARM's sense: every call answers 200 at once, and the state moves on by itself
(NotRegistered -> Registering -> Registered), which is exactly why clients must poll the GET.
"""
from .arm import PROVIDER_RESOURCE_TYPES, SUB, api_versions
from .errors import ArmError

FEATURE_TYPE = "Microsoft.Features/providers/features"


def _is(state, *names):
    """Registration states compared case-insensitively: ARM itself spells them both ways (the REST examples in
    tests/data/arm-examples/features answer "registered", the portal and CLI show "Registered")."""
    return state.lower() in {name.lower() for name in names}


def _feature_body(ctx, feature):
    return {
        "properties": {"state": feature.current(ctx.now)},
        "id": f"/subscriptions/{ctx.sub.id}/providers/Microsoft.Features/providers/{feature.namespace}/features/"
              f"{feature.name}",
        "type": FEATURE_TYPE,
        "name": f"{feature.namespace}/{feature.name}",
    }


def _feature(ctx, namespace, feature):
    found = ctx.sub.features.get((namespace.lower(), feature.lower()))
    if found is None:
        raise ArmError(404, "FeatureNotFound",
                       f"The feature '{feature}' could not be found under the resource provider namespace "
                       f"'{namespace}'.")
    return found


def get_feature(ctx, sub, namespace, feature):
    return 200, _feature_body(ctx, _feature(ctx, namespace, feature))


def register_feature(ctx, sub, namespace, feature):
    found = _feature(ctx, namespace, feature)
    if _is(found.current(ctx.now), "NotRegistered", "Unregistered", "Unregistering"):
        found.move("Registering", "Registered", ctx.now, ctx.state.settings["feature_registration_s"])
    return 200, _feature_body(ctx, found)


def unregister_feature(ctx, sub, namespace, feature):
    found = _feature(ctx, namespace, feature)
    if _is(found.current(ctx.now), "Registered", "Registering", "Pending"):
        found.move("Unregistering", "Unregistered", ctx.now, ctx.state.settings["feature_registration_s"])
    return 200, _feature_body(ctx, found)


def list_namespace_features(ctx, sub, namespace):
    features = [f for (ns, dummy), f in ctx.sub.features.items() if ns == namespace.lower()]
    return 200, ctx.page([_feature_body(ctx, f) for f in features])


def list_all_features(ctx, sub):
    return 200, ctx.page([_feature_body(ctx, f) for f in ctx.sub.features.values()])


def _provider(ctx, namespace):
    found = ctx.sub.providers.get(namespace.lower())
    if found is None:
        raise ArmError(404, "InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
    return found


def _locations(ctx):
    names = {"westeurope": "West Europe", "northeurope": "North Europe", "eastus": "East US", "westus": "West US"}
    return sorted({names.get(g["location"].lower(), g["location"]) for g in ctx.sub.resource_groups.values()})


def _provider_body(ctx, provider):
    return {
        "id": f"/subscriptions/{ctx.sub.id}/providers/{provider.namespace}",
        "namespace": provider.namespace,
        "registrationState": provider.current(ctx.now),
        "registrationPolicy": "RegistrationRequired",
        # The types this emulator serves with the api-versions it accepts for them (arm.API_VERSIONS), as ARM
        # lists a provider's real versions (tests/data/arm-examples/resources/2025-04-01/GetProvider.json).
        "resourceTypes": [
            {"resourceType": rt, "locations": _locations(ctx), "apiVersions": list(api_versions(provider.namespace, rt)),
             "capabilities": "None"}
            for rt in PROVIDER_RESOURCE_TYPES.get(provider.namespace.lower(), [])],
    }


def get_provider(ctx, sub, namespace):
    return 200, _provider_body(ctx, _provider(ctx, namespace))


def list_providers(ctx, sub):
    return 200, ctx.page([_provider_body(ctx, p) for p in ctx.sub.providers.values()])


def register_provider(ctx, sub, namespace):
    provider = _provider(ctx, namespace)
    if _is(provider.current(ctx.now), "NotRegistered", "Unregistered", "Unregistering"):
        provider.move("Registering", "Registered", ctx.now, ctx.state.settings["provider_registration_s"])
    return 200, _provider_body(ctx, provider)


def unregister_provider(ctx, sub, namespace):
    provider = _provider(ctx, namespace)
    if _is(provider.current(ctx.now), "Registered", "Registering"):
        provider.move("Unregistering", "Unregistered", ctx.now, ctx.state.settings["provider_registration_s"])
    return 200, _provider_body(ctx, provider)


def register(router):
    features = rf"{SUB}/providers/Microsoft\.Features/providers/(?P<namespace>[^/]+)/features"
    router.add("GET", rf"{SUB}/providers/Microsoft\.Features/features", list_all_features, FEATURE_TYPE)
    router.add("GET", features, list_namespace_features, FEATURE_TYPE)
    router.add("GET", rf"{features}/(?P<feature>[^/]+)", get_feature, FEATURE_TYPE)
    router.add("POST", rf"{features}/(?P<feature>[^/]+)/register", register_feature, FEATURE_TYPE)
    router.add("POST", rf"{features}/(?P<feature>[^/]+)/unregister", unregister_feature, FEATURE_TYPE)
    providers = "Microsoft.Resources/providers"
    router.add("GET", rf"{SUB}/providers", list_providers, providers)
    router.add("GET", rf"{SUB}/providers/(?P<namespace>[^/]+)", get_provider, providers)
    router.add("POST", rf"{SUB}/providers/(?P<namespace>[^/]+)/register", register_provider, providers)
    router.add("POST", rf"{SUB}/providers/(?P<namespace>[^/]+)/unregister", unregister_provider, providers)


# --- Microsoft.Resources resource groups (read-only; what azure.azcollection reads before each VM call) --------
def get_resource_group(ctx, sub, rg):
    group = ctx.resource_group(rg)
    return 200, {"id": f"/subscriptions/{ctx.sub.id}/resourceGroups/{group['name']}", "name": group["name"],
                 "type": "Microsoft.Resources/resourceGroups", "location": group["location"],
                 "properties": {"provisioningState": "Succeeded"}}


def register_resource_groups(router):
    router.add("GET", rf"{SUB}/resourceGroups/(?P<rg>[^/]+)", get_resource_group,
               "Microsoft.Resources/resourceGroups")


# --- Microsoft.Resources subscriptions: what `az login --service-principal` lists --------------------------------
SUBSCRIPTIONS_TYPE = "Microsoft.Resources/subscriptions"


def _subscription_body(sub):
    """A subscription as Subscriptions - Get/List answer (tests/data/arm-examples/resources/subscriptions-2019-11-01/
    GetSubscriptions.json, subscriptions-2021-01-01/GetSubscription.json): the examples' policy values, no tags."""
    return {"id": f"/subscriptions/{sub.id}", "subscriptionId": sub.id, "tenantId": sub.tenant,
            "displayName": sub.display_name, "state": "Enabled",
            "subscriptionPolicies": {"locationPlacementId": "Internal_2014-09-01", "quotaId": "Internal_2014-09-01",
                                     "spendingLimit": "Off"},
            "authorizationSource": "RoleBased", "managedByTenants": []}


def _caller_can_see(ctx, sub):
    """Azure lists the subscriptions the caller has a role in: here, those of the token's tenant whose seed names
    the caller (a service principal or a managed identity)."""
    app = str(ctx.claims.get("appid", "")).lower()
    return sub.tenant.lower() == str(ctx.claims.get("tid", "")).lower() and (
        app in sub.service_principals or app in {mi.lower() for mi in sub.managed_identities})


def list_subscriptions(ctx):
    """GET /subscriptions (Subscriptions - List, "Gets all subscriptions for a tenant"), paged."""
    return 200, ctx.page([_subscription_body(s) for s in ctx.state.subscriptions.values() if _caller_can_see(ctx, s)])


def get_subscription(ctx, sub):
    """GET /subscriptions/{id} (Subscriptions - Get); server.py already answered 404 for an unknown id."""
    return 200, _subscription_body(ctx.sub)


def register_subscriptions(router):
    router.add("GET", "/subscriptions", list_subscriptions, SUBSCRIPTIONS_TYPE)
    router.add("GET", SUB, get_subscription, SUBSCRIPTIONS_TYPE)
