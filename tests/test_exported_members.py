"""Each package's public face is its ``__all__``: every name listed exists, and nothing public is missing."""

import importlib
import types

import pytest

PACKAGES = ["appliance.policy", "appliance.gate", "appliance.mailauth", "appliance.guards", "appliance.audit",
            "appliance.sdk"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = set(module.__all__)
    public = {n for n, v in vars(module).items()
              if not n.startswith("_") and not isinstance(v, types.ModuleType) and n != "annotations"}
    assert exported <= set(vars(module)), f"{name}.__all__ names missing attributes: {exported - set(vars(module))}"
    assert public <= exported, f"{name} has public names not in __all__: {public - exported}"
