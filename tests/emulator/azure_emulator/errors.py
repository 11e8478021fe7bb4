"""ARM's error envelope: {"error": {"code", "message"[, "target"]}} with an HTTP status."""


class ArmError(Exception):
    def __init__(self, status, code, message, headers=None, target=None):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.target = target

    def body(self):
        error = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"error": error}


def not_found(kind, name, rg):
    """ARM's 404 for a missing resource in an existing resource group."""
    return ArmError(404, "ResourceNotFound",
                    f"The Resource '{kind}/{name}' under resource group '{rg}' was not found. "
                    "For more details please go to https://aka.ms/ARMResourceNotFoundFix")


def rg_not_found(rg):
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
