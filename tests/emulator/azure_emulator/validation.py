"""Request bodies are checked against the SDK's own generated models, not against a hand-written schema.

The azure-mgmt-* packages describe every property with `rest_field` (wire name, visibility) and a type
annotation; walking those gives the same contract the real service enforces: unknown members, wrong JSON
types and missing required members are rejected with ARM's 400 error shape. Read-only members are ignored, as
ARM ignores them when a client round-trips a GET body.
"""
import enum
import functools
import sys
import typing

from .errors import ArmError

NONE_TYPE = type(None)  # Optional[...] is Union[..., NoneType]


class _Any:
    """Marker for properties typed Any (settings, protectedSettings): any JSON value is accepted."""


@functools.lru_cache(maxsize=None)
def model_fields(cls):
    """{wire name: (type, read_only)} for a generated model class."""
    cls()  # the generated metaclass fills _attr_to_rest_field on first instantiation
    module = sys.modules[cls.__module__]
    namespace = dict(vars(module))
    namespace["_models"] = sys.modules[module.__name__.rsplit(".", 1)[0]]
    annotations = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__ == cls.__module__:
            annotations.update(getattr(klass, "__annotations__", {}))
    fields = {}
    for attr, rest_field in cls._attr_to_rest_field.items():
        annotation = annotations.get(attr, typing.Any)
        if isinstance(annotation, str):
            annotation = eval(annotation, namespace)  # noqa: S307 - the SDK's own annotation strings
        read_only = list(rest_field._visibility or []) == ["read"]
        fields[rest_field._rest_name] = (annotation, read_only)
    return fields


_JSON_TYPE_NAMES = {str: "String", bool: "Boolean", int: "Int32", float: "Double"}


def _invalid(path, message):
    return ArmError(400, "InvalidRequestContent",
                    f"The request content was invalid and could not be deserialized: '{message} Path '{path}'.'.")


def _resolve(annotation, namespace):
    if isinstance(annotation, typing.ForwardRef):
        return eval(annotation.__forward_arg__, namespace)  # noqa: S307
    return annotation


def check(value, annotation, path, namespace):
    """Raise ArmError(400) if `value` does not fit `annotation`; `path` names the property for the message."""
    annotation = _resolve(annotation, namespace)
    if annotation is typing.Any or value is None and path:
        return
    origin = typing.get_origin(annotation)
    if origin is typing.Union:
        options = [a for a in typing.get_args(annotation) if a is not NONE_TYPE]
        errors = []
        for option in options:
            try:
                check(value, option, path, namespace)
                return
            except ArmError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise _invalid(path, f"Error converting value {value!r}.")
        return
    if origin in (list, typing.List):
        if not isinstance(value, list):
            raise _invalid(path, "Cannot deserialize the current JSON value into a JSON array.")
        (item,) = typing.get_args(annotation) or (typing.Any,)
        for index, element in enumerate(value):
            check(element, item, f"{path}[{index}]", namespace)
        return
    if origin in (dict, typing.Dict):
        if not isinstance(value, dict):
            raise _invalid(path, "Cannot deserialize the current JSON value into a JSON object.")
        args = typing.get_args(annotation)
        for key, element in value.items():
            check(element, args[1] if args else typing.Any, f"{path}.{key}", namespace)
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        if not isinstance(value, str):
            raise _invalid(path, f"Error converting value {value!r} to type 'String'.")
        return
    if isinstance(annotation, type) and hasattr(annotation, "_attr_to_rest_field") or _is_model(annotation):
        validate_model(value, annotation, path)
        return
    if annotation in _JSON_TYPE_NAMES:
        ok = isinstance(value, annotation) and not (annotation is not bool and isinstance(value, bool))
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            ok = True
        if not ok:
            raise _invalid(path, f"Error converting value {value!r} to type 'System.{_JSON_TYPE_NAMES[annotation]}'.")


def _is_model(annotation):
    return isinstance(annotation, type) and any(base.__name__ == "Model" for base in annotation.__mro__)


def validate_model(body, cls, path=""):
    """Validate a JSON object against a generated model class, recursively."""
    if not isinstance(body, dict):
        raise _invalid(path or "$", f"Cannot deserialize the current JSON value into type '{cls.__name__}'.")
    fields = model_fields(cls)
    namespace = dict(vars(sys.modules[cls.__module__]))
    namespace["_models"] = sys.modules[cls.__module__.rsplit(".", 1)[0]]
    for key, value in body.items():
        where = f"{path}.{key}" if path else key
        if key not in fields:
            raise _invalid(where, f"Could not find member '{key}' on object of type '{cls.__name__}'.")
        annotation, read_only = fields[key]
        if not read_only:
            check(value, annotation, where, namespace)
    for key, (annotation, read_only) in fields.items():
        if not read_only and key not in body and _required(annotation, namespace):
            raise required_missing(f"{path}.{key}" if path else key)


def _required(annotation, namespace):
    annotation = _resolve(annotation, namespace)
    return not (typing.get_origin(annotation) is typing.Union and type(None) in typing.get_args(annotation)) \
        and annotation is not typing.Any


def required_missing(path):
    return ArmError(400, "BadRequest", f"Required property '{path}' is missing from the request.", target=path)


def require_object(body, path):
    """settings/protectedSettings are typed Any in the models, but ARM wants a JSON object there."""
    if body is not None and not isinstance(body, dict):
        raise _invalid(path, "Unexpected JSON token; expected a JSON object.")
