"""Throttling as Azure does it, and the simulated clock it runs on.

Source: ../shared/reference/throttling.md (Microsoft Learn: "Understand how Azure Resource Manager throttles
requests", 2024 regional throttling; "Compute throttling limits", 2024-05; "Troubleshooting API throttling
errors"), plus the real headers in ../shared/reference/recordings/ (azure-sdk-assets, 2023-12-28).

Three models, chosen by the admin setting `throttle_model`:

* "azure" (default): two layers of token buckets. A bucket starts full, a request takes one token, tokens come
  back at the refill rate up to the bucket size; a refused request takes no token. A request must pass both
  layers; the first layer's tokens stay spent when the second refuses (ARM has forwarded the request by then).
  - ARM, per subscription AND security principal (the token's oid), per operation kind: reads (GET, HEAD)
    250 + 25/s, writes (PUT, PATCH, POST) 200 + 10/s, deletes 200 + 10/s (deletes are not charged to writes);
    across all principals of a subscription a global bucket of 15x those numbers; requests outside a
    subscription use the same numbers per tenant and principal. Headers
    x-ms-ratelimit-remaining-subscription-{reads,writes,deletes} (the principal's bucket) and
    x-ms-ratelimit-remaining-subscription-global-{...}; 429 code SubscriptionRequestsThrottled
    (TenantRequestsThrottled), message as ARM words it.
  - Microsoft.Compute, per policy (COMPUTE_POLICIES) with a per-resource bucket (one VM, one scale set, one
    scale-set VM; an LRO poll counts against the resource its operation works on) and a per-subscription bucket,
    refills per minute. Header x-ms-ratelimit-remaining-resource:
    "Microsoft.Compute/<Policy>SubscriptionMaximum;<n>,Microsoft.Compute/<Policy>Resource;<m>", the shape of the
    recording (UpdateVM, LowCostGet and GetOperation are the recorded policy names; HighCostGet is
    throttling.md's example; GetVMScaleSet and HighCostGetVMScaleSet appear in public 429 reports; the others
    follow the same pattern). 429 body: OperationNotAllowed with a TooManyRequests detail whose target names the
    bucket that refused (e.g. "UpdateVMResource").
* "window": the emulator's earlier model, kept for tools that configure it through the `throttle` setting
  ({reads, writes, window_s}): one fixed window per subscription, deletes drawn from the writes budget, the old
  x-ms-ratelimit-remaining-resource shape. Its 429 body is ARM's (SubscriptionRequestsThrottled).
* "off": no budget, no throttling headers.

Time: every bucket and window runs on the simulated clock (SimClock): `time_scale` simulated seconds pass per
real second, and Retry-After is the simulated wait converted back to the caller's (real) seconds. Azure sends
whole seconds; so does the emulator unless `fractional_retry_after` is set, and whole seconds are rounded UP
(never below 1), so a client that honours Retry-After always finds the token it waited for.
"""
import json
import math
import re
import time

from .errors import ArmError
from .handlers import iso


class SimClock:
    """Simulated time: starts at the real time and runs `scale` times as fast; changes of scale keep it continuous."""

    def __init__(self, scale=1.0):
        self.reset(scale)

    def reset(self, scale=1.0):
        self.base_real = self.base_sim = time.time()
        self.scale = float(scale)

    def now(self):
        return self.base_sim + (time.time() - self.base_real) * self.scale

    def set_scale(self, scale):
        if float(scale) != self.scale:
            self.base_sim, self.base_real = self.now(), time.time()
            self.scale = float(scale)

    def advance(self, seconds):
        """Jump simulated time forward (admin API): handlers finish, registrations complete, buckets refill."""
        self.base_sim += float(seconds)


class Bucket:
    """A token bucket on the simulated clock: `size` tokens, `rate` tokens per simulated second."""

    __slots__ = ("size", "rate", "tokens", "at")

    def __init__(self, size, rate, now):
        self.size, self.rate, self.tokens, self.at = size, rate, float(size), now

    def level(self, now):
        if now > self.at:
            self.tokens = min(self.size, self.tokens + (now - self.at) * self.rate)
            self.at = now
        return self.tokens

    def wait(self, now):
        """Simulated seconds until one whole token is back."""
        return max(0.0, (1.0 - self.level(now)) / self.rate)

    def remaining(self, now):
        return int(math.floor(self.level(now) + 1e-9))


def retry_after(sim_wait, scale, fractional=False):
    """The Retry-After value in the caller's seconds for a simulated wait (see the module docstring)."""
    real = sim_wait / scale
    if fractional:
        return max(0.001, math.ceil(real * 1000 - 1e-6) / 1000)
    return max(1, math.ceil(real - 1e-9))


def format_retry_after(value):
    return str(value) if isinstance(value, int) else f"{value:.3f}".rstrip("0").rstrip(".")


class Throttled(ArmError):
    """A 429 with the bucket (policy) that refused it; `details` for Compute's body."""

    def __init__(self, code, message, retry, policy, headers=None, details=None):
        headers = dict(headers or {}, **{"Retry-After": format_retry_after(retry)})
        super().__init__(429, code, message, headers=headers)
        self.policy, self.retry_after, self.details = policy, retry, details

    def body(self):
        body = super().body()
        if self.details:
            body["error"]["details"] = self.details
        return body


# --- ARM ----------------------------------------------------------------------------------------------------
ARM_LIMITS = {"reads": (250, 25.0), "writes": (200, 10.0), "deletes": (200, 10.0)}  # bucket, refill per second
ARM_GLOBAL_FACTOR = 15  # the subscription's limit across all principals is 15x the per-principal one
ARM_VERB = {"reads": "read", "writes": "write", "deletes": "delete"}


def arm_kind(method):
    if method in ("GET", "HEAD"):
        return "reads"
    return "deletes" if method == "DELETE" else "writes"


def principal_of(claims):
    claims = claims or {}
    return str(claims.get("oid") or claims.get("appid") or claims.get("sub") or "unknown")


# --- Compute ------------------------------------------------------------------------------------------------
# policy: (resource bucket, resource refill per minute, subscription bucket, subscription refill per minute)
COMPUTE_POLICIES = {
    "PutVM": (12, 4, 1500, 500),
    "UpdateVM": (12, 4, 1500, 500),
    "DeleteVM": (12, 4, 1500, 500),
    "LowCostGet": (36, 12, 24000, 8000),
    "HighCostGet": (None, None, 900, 300),
    "GetOperation": (45, 15, 15000, 5000),
    "VMGuestPatch": (6, 2, 600, 200),
    "PutVMScaleSet": (12, 4, 375, 125),
    "UpdateVMScaleSet": (12, 4, 1500, 500),
    "DeleteVMScaleSet": (12, 4, 525, 175),
    "GetVMScaleSet": (36, 12, 2400, 800),
    "HighCostGetVMScaleSet": (30, 10, 1080, 360),
    "UpdateVMScaleSetVMs": (12, 4, 1500, 500),
    "DeleteVMScaleSetVMs": (12, 4, 1500, 500),
    "GetVMScaleSetVMs": (36, 12, 6000, 2000),
}
_SUB = r"/subscriptions/[^/]+"
_RG_COMPUTE = _SUB + r"/resourcegroups/([^/]+)/providers/microsoft\.compute"
_OPERATION = re.compile(_SUB + r"/providers/microsoft\.compute/locations/[^/]+/operations/([^/]+)$")
_VM_LIST = re.compile(_SUB + r"(?:/resourcegroups/[^/]+)?/providers/microsoft\.compute"
                             r"(?:/locations/[^/]+)?/virtualmachines$")
_VM = re.compile(_RG_COMPUTE + r"/virtualmachines/([^/]+)(/.*)?$")
_VMSS_LIST = re.compile(_SUB + r"(?:/resourcegroups/[^/]+)?/providers/microsoft\.compute"
                               r"(?:/locations/[^/]+)?/virtualmachinescalesets$")
_VMSS = re.compile(_RG_COMPUTE + r"/virtualmachinescalesets/([^/]+)(/.*)?$")
_VMSS_VM = re.compile(r"/virtualmachines/([^/]+)(/.*)?$")


def compute_policy(method, path, operations):
    """(policy, resource key or None) for a Microsoft.Compute request, or None when no published policy applies
    (extension images, other providers' resources at a VM's scope such as tags)."""
    lowered = path.lower().rstrip("/")
    write = method not in ("GET", "HEAD")
    match = _OPERATION.match(lowered)
    if match:
        if write:
            return None
        op = operations.get(match.group(1)) or operations.get(path.rstrip("/").rsplit("/", 1)[-1])
        return "GetOperation", getattr(op, "throttle_resource", None) or ("operation", match.group(1))
    if _VM_LIST.match(lowered):
        return None if write else ("HighCostGet", None)
    if _VMSS_LIST.match(lowered):
        return None if write else ("HighCostGetVMScaleSet", None)
    match = _VM.match(lowered)
    if match:
        rg, name, rest = match.group(1), match.group(2), match.group(3) or ""
        if rest.startswith("/providers/"):
            return None
        resource = ("vm", rg, name)
        if not write:
            return "LowCostGet", resource
        if rest == "":
            return {"PUT": "PutVM", "DELETE": "DeleteVM"}.get(method, "UpdateVM"), resource
        if rest in ("/deallocate", "/delete"):
            return "DeleteVM", resource
        if rest in ("/assesspatches", "/installpatches"):
            return "VMGuestPatch", resource
        return "UpdateVM", resource
    match = _VMSS.match(lowered)
    if match:
        rg, name, rest = match.group(1), match.group(2), match.group(3) or ""
        if rest.startswith("/providers/"):
            return None
        resource = ("vmss", rg, name)
        instance = _VMSS_VM.match(rest)
        if instance:
            resource = ("vmss-vm", rg, name, instance.group(1))
            inner = instance.group(2) or ""
            if not write:
                return "GetVMScaleSetVMs", resource
            if (method == "DELETE" and (inner == "" or inner.startswith("/extensions/"))) or inner == "/deallocate":
                return "DeleteVMScaleSetVMs", resource
            return "UpdateVMScaleSetVMs", resource
        if not write:
            if rest in ("/instanceview", "/virtualmachines"):
                return "HighCostGetVMScaleSet", resource
            return "GetVMScaleSet", resource
        if rest == "" and method == "PUT":
            return "PutVMScaleSet", resource
        if (rest == "" and method == "DELETE") or rest in ("/deallocate", "/delete"):
            return "DeleteVMScaleSet", resource
        return "UpdateVMScaleSet", resource
    return None


def operation_id(headers):
    """The operation id in a write's Azure-AsyncOperation (or Location) header, if any."""
    for key in ("Azure-AsyncOperation", "Location"):
        value = (headers or {}).get(key)
        if value:
            match = re.search(r"/operations/([^/?]+)", value)
            if match:
                return match.group(1)
    return None


class Throttling:
    """Charges requests to the buckets of the configured model. Its counters live in state.throttle (emptied by
    reset and by a change of the `throttle` setting); all calls happen under the state lock."""

    def __init__(self, state, clock):
        self.state, self.clock = state, clock

    @property
    def model(self):
        return self.state.settings.get("throttle_model", "azure")

    def _bucket(self, key, size, rate, now):
        bucket = self.state.throttle.get(key)
        if bucket is None:
            bucket = self.state.throttle[key] = Bucket(size, rate, now)
        return bucket

    def _retry(self, sim_wait):
        return retry_after(sim_wait, self.clock.scale, bool(self.state.settings.get("fractional_retry_after")))

    # --- layer 1 --------------------------------------------------------------------------------------------
    def arm(self, claims, sub, tenant, method, now):
        """Headers for an ARM request that passed, or Throttled. `sub` is the subscription id or None."""
        model = self.model
        if model == "off":
            return {}
        if model == "window":
            return self._window(sub, method, now) if sub else {}
        kind = arm_kind(method)
        size, rate = ARM_LIMITS[kind]
        principal = principal_of(claims)
        if sub:
            scopes = [("subscription", self._bucket(("arm", sub, principal, kind), size, rate, now)),
                      ("subscription-global", self._bucket(("arm-global", sub, kind), size * ARM_GLOBAL_FACTOR,
                                                           rate * ARM_GLOBAL_FACTOR, now))]
        else:
            scopes = [("tenant", self._bucket(("arm-tenant", tenant, principal, kind), size, rate, now))]
        empty = [(scope, bucket) for scope, bucket in scopes if bucket.level(now) < 1]
        if not empty:
            for dummy, bucket in scopes:
                bucket.tokens -= 1
        headers = {f"x-ms-ratelimit-remaining-{scope}-{kind}": str(bucket.remaining(now)) for scope, bucket in scopes}
        if empty:
            scope, bucket = max(empty, key=lambda item: item[1].wait(now))
            retry = self._retry(bucket.wait(now))
            verb, shown = ARM_VERB[kind], format_retry_after(retry)
            if scope == "tenant":
                code, what = "TenantRequestsThrottled", f"tenant '{tenant}' actor '{principal}'"
            elif scope == "subscription":
                code, what = "SubscriptionRequestsThrottled", f"subscription '{sub}' actor '{principal}'"
            else:
                code, what = "SubscriptionRequestsThrottled", f"subscription '{sub}'"
            raise Throttled(code, f"Number of '{verb}' requests for {what} exceeded. Please try again after "
                                  f"'{shown}' seconds after additional tokens are available. Refer to "
                                  "https://aka.ms/arm-throttling for additional information.",
                            retry, f"ARM/{scope}-{kind}", headers)
        return headers

    def _window(self, sub, method, now):
        """The earlier fixed window per subscription (setting `throttle`); deletes draw on the writes budget."""
        limits = self.state.settings["throttle"]
        bucket = self.state.throttle.get(sub)
        if bucket is None or now >= bucket["start"] + limits["window_s"]:
            bucket = self.state.throttle[sub] = {"start": now, "reads": 0, "writes": 0}
        kind = "reads" if method in ("GET", "HEAD") else "writes"
        if bucket[kind] >= limits[kind]:
            retry = self._retry(bucket["start"] + limits["window_s"] - now)
            raise Throttled("SubscriptionRequestsThrottled",
                            f"Number of '{ARM_VERB[kind]}' requests for subscription '{sub}' exceeded. Please try "
                            f"again after '{format_retry_after(retry)}' seconds. Refer to "
                            "https://aka.ms/arm-throttling for additional information.",
                            retry, f"window/{kind}")
        bucket[kind] += 1
        return {f"x-ms-ratelimit-remaining-subscription-{arm_kind(method)}": str(limits[kind] - bucket[kind])}

    # --- layer 2 --------------------------------------------------------------------------------------------
    def compute(self, sub, method, path, now, arm_headers):
        """Headers for a Microsoft.Compute request that passed, or Throttled; {} when no policy applies."""
        model = self.model
        if model == "off" or "/providers/microsoft.compute/" not in path.lower():
            return {}
        if model == "window":
            remaining = next((v for k, v in arm_headers.items()
                              if k.startswith("x-ms-ratelimit-remaining-subscription-")), None)
            if remaining is None:
                return {}
            lowered = path.lower()
            name = ("GetOperation" if method == "GET" and "/operations/" in lowered
                    else "LowCostGet" if method == "GET" else "UpdateVM")
            return {"x-ms-ratelimit-remaining-resource":
                    f"Microsoft.Compute/{name}3Min;{remaining},Microsoft.Compute/{name}30Min;{remaining}"}
        found = compute_policy(method, path, self.state.operations)
        if found is None:
            return {}
        policy, resource = found
        res_size, res_rate, sub_size, sub_rate = COMPUTE_POLICIES[policy]
        scopes = [(f"{policy}SubscriptionMaximum", self._bucket(("compute", sub, policy), sub_size, sub_rate / 60.0,
                                                                  now))]
        if resource is not None and res_size is not None:
            scopes.append((f"{policy}Resource", self._bucket(("compute", sub, policy, resource), res_size,
                                                             res_rate / 60.0, now)))
        empty = [(name, bucket) for name, bucket in scopes if bucket.level(now) < 1]
        if not empty:
            for dummy, bucket in scopes:
                bucket.tokens -= 1
        headers = {"x-ms-ratelimit-remaining-resource": ",".join(
            f"Microsoft.Compute/{name};{bucket.remaining(now)}" for name, bucket in scopes)}
        if not empty:
            headers["x-ms-request-charge"] = "1"
            return headers
        name, bucket = max(empty, key=lambda item: item[1].wait(now))
        wait = bucket.wait(now)
        retry = self._retry(wait)
        detail = json.dumps({"operationGroup": name, "startTime": iso(now), "endTime": iso(now + wait),
                             "allowedRequestCount": bucket.size, "measuredRequestCount": bucket.size + 1},
                            separators=(",", ":"))
        raise Throttled("OperationNotAllowed", "The server rejected the request because too many requests have "
                        "been received for this subscription.", retry, f"Microsoft.Compute/{name}", headers,
                        details=[{"code": "TooManyRequests", "target": name, "message": detail}])

    def note_operation(self, method, path, headers):
        """Remember which resource an LRO works on, so its polls (Get Operation) count against that resource."""
        if self.model != "azure" or method in ("GET", "HEAD"):
            return
        op_id = operation_id(headers)
        found = compute_policy(method, path, {}) if op_id else None
        op = self.state.operations.get(op_id) if op_id else None
        if op is not None and found is not None and found[1] is not None:
            op.throttle_resource = found[1]
