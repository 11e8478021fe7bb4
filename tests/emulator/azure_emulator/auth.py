"""Entra ID as far as the SDKs need it: OpenID discovery, the v2.0 token endpoint and App Service style MSI.

Access tokens are JWT-shaped (header.claims.signature, HS256 with a per-process key) carrying aud, tid, appid
and exp, so clients that peek into tokens see realistic claims, and ARM calls can verify them for real.
"""
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid

from .errors import ArmError
from .state import ARM_AUDIENCE

TOKEN_LIFETIME_S = 3600
# Token scopes accepted besides ARM_AUDIENCE; --public-cloud adds the public cloud's ARM audiences so unmodified
# clients that know only AzureCloud get tokens (the token itself always carries the emulator's audience).
EXTRA_AUDIENCES = []
_SIGNING_KEY = secrets.token_bytes(32)


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(tenant, app_id, base_url):
    now = int(time.time())
    header = _b64(json.dumps({"typ": "JWT", "alg": "HS256"}).encode())
    claims = _b64(json.dumps({
        "aud": ARM_AUDIENCE, "iss": f"{base_url}/{tenant}/v2.0", "iat": now, "nbf": now,
        "exp": now + TOKEN_LIFETIME_S, "tid": tenant, "appid": app_id, "oid": str(uuid.uuid5(uuid.NAMESPACE_URL, app_id)),
        "sub": app_id, "ver": "1.0",
    }).encode())
    signature = _b64(hmac.new(_SIGNING_KEY, f"{header}.{claims}".encode(), hashlib.sha256).digest())
    return f"{header}.{claims}.{signature}", now + TOKEN_LIFETIME_S


def _decode_unverified(token):
    """Claims of a JWT without checking its signature (client assertions are not ours to verify)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    json.loads(_unb64(parts[0]))
    claims = json.loads(_unb64(parts[1]))
    if not isinstance(claims, dict):
        raise ValueError("claims are not an object")
    return claims


def verify_bearer(header):
    """Claims of a valid ARM bearer token, or ArmError(401) shaped as ARM answers."""
    challenge = {"WWW-Authenticate": 'Bearer authorization_uri="https://login.azure-emulator.local/", '
                                     'error="invalid_token", error_description="The authentication failed"'}
    if not header:
        raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                       headers=challenge)
    scheme, dummy, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ArmError(401, "AuthenticationFailed",
                       "Authentication failed. The 'Authorization' header is provided in an invalid format.",
                       headers=challenge)
    try:
        header_b64, claims_b64, signature = token.split(".")
        expected = _b64(hmac.new(_SIGNING_KEY, f"{header_b64}.{claims_b64}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, signature):
            raise ValueError("bad signature")
        claims = json.loads(_unb64(claims_b64))
    except ValueError:
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.", headers=challenge) from None
    if claims.get("exp", 0) < time.time():
        raise ArmError(401, "ExpiredAuthenticationToken",
                       "The access token expiry UTC time is earlier than current UTC time.", headers=challenge)
    if claims.get("aud") != ARM_AUDIENCE:
        raise ArmError(401, "InvalidAuthenticationTokenAudience",
                       "The access token has been obtained for wrong audience or resource "
                       f"'{claims.get('aud')}'. It should exactly match with one of the allowed audiences "
                       f"'{ARM_AUDIENCE}'.", headers=challenge)
    return claims


def openid_configuration(base_url, tenant):
    issuer = f"{base_url}/{tenant}/v2.0"
    return {
        "token_endpoint": f"{base_url}/{tenant}/oauth2/v2.0/token",
        "authorization_endpoint": f"{base_url}/{tenant}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{base_url}/{tenant}/oauth2/v2.0/devicecode",
        "issuer": issuer,
        "jwks_uri": f"{base_url}/{tenant}/discovery/v2.0/keys",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "azure-emulator.local",
    }


def instance_discovery(host, tenant="common"):
    """Entra ID's /common/discovery/instance answer (MSAL asks it before trusting an authority)."""
    return {
        "tenant_discovery_endpoint": f"https://{host}/{tenant}/v2.0/.well-known/openid-configuration",
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }


def _aad_error(status, error, code, description):
    trace = str(uuid.uuid4())
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {description} Trace ID: {trace} Correlation ID: {uuid.uuid4()} "
                             f"Timestamp: {time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}",
        "error_codes": [code], "timestamp": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime()),
        "trace_id": trace, "correlation_id": str(uuid.uuid4()),
        "error_uri": "https://login.azure-emulator.local/error?code=" + str(code),
    }


def scope_ok(scope):
    """Accept the ARM audience as '<aud>.default' or '<aud>/.default' (with or without the trailing slash)."""
    for item in (scope or "").split():
        if item.endswith(".default"):
            resource = item[: -len(".default")].rstrip("/")
            if resource in [aud.rstrip("/") for aud in [ARM_AUDIENCE] + EXTRA_AUDIENCES]:
                return True
    return False


def token_response(state, base_url, tenant, form):
    """(status, body) for a POST to /{tenant}/oauth2/v2.0/token (client credentials grant)."""
    if not state.tenant_known(tenant):
        return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
    if form.get("grant_type") != "client_credentials":
        return _aad_error(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
    client_id = form.get("client_id", "")
    principal = state.find_principal(tenant, client_id)
    if principal is None:
        return _aad_error(400, "unauthorized_client", 700016,
                          f"Application with identifier '{client_id}' was not found in the directory '{tenant}'.")
    if "client_secret" in form:
        if principal["secret"] is None or not hmac.compare_digest(form["client_secret"], principal["secret"]):
            return _aad_error(401, "invalid_client", 7000215,
                              "Invalid client secret provided. Ensure the secret being sent in the request is the "
                              f"client secret value, not the client secret ID, for a secret added to app '{client_id}'.")
    elif "client_assertion" in form:
        try:
            claims = _decode_unverified(form["client_assertion"])
        except ValueError:
            return _aad_error(400, "invalid_client", 50027, "JWT token is invalid or malformed.")
        certificate_style = claims.get("iss") == client_id and claims.get("sub") == client_id
        if not (certificate_style or principal["federated"]):
            return _aad_error(401, "invalid_client", 700213,
                              f"No matching federated identity record found for presented assertion subject "
                              f"'{claims.get('sub')}'.")
        if claims.get("exp") is not None and claims["exp"] < time.time():
            return _aad_error(400, "invalid_client", 700024, "Client assertion is not within its valid time range.")
    else:
        return _aad_error(401, "invalid_client", 7000216,
                          "'client_assertion', 'client_secret' or 'request' is required for the "
                          "'client_credentials' grant type.")
    if not scope_ok(form.get("scope")):
        return _aad_error(400, "invalid_scope", 70011,
                          f"The provided value for the input parameter 'scope' is not valid: {form.get('scope')!r}.")
    token, dummy = issue_token(tenant, client_id, base_url)
    return 200, {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME_S, "ext_expires_in": TOKEN_LIFETIME_S,
                 "access_token": token}


def msi_response(state, base_url, query, identity_header, expected_header):
    """(status, body) for the App Service managed identity endpoint (IDENTITY_ENDPOINT/IDENTITY_HEADER)."""
    if identity_header != expected_header:
        return 401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER is missing or wrong."}
    resource = query.get("resource", "")
    if resource.rstrip("/") != ARM_AUDIENCE.rstrip("/"):
        return 400, {"statusCode": 400, "message": f"Unsupported resource '{resource}'."}
    identity = state.managed_identity(query.get("client_id"))
    if identity is None:
        return 400, {"statusCode": 400, "message": "No managed identity with that client_id is assigned."}
    tenant, client_id = identity
    token, expires_on = issue_token(tenant, client_id, base_url)
    return 200, {"access_token": token, "expires_on": str(expires_on), "resource": resource,
                 "token_type": "Bearer", "client_id": client_id}
