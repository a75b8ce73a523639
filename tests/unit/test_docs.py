"""The documentation users rely on stays in step with the code."""
import re

from swms.config import REPO_ROOT
from tools.export_contracts import events, rpc_methods, schema_files

DOCS = REPO_ROOT / "docs"


def test_json_schemas_are_current():
    stale = [str(path.relative_to(REPO_ROOT)) for path, text in schema_files().items()
             if not path.exists() or path.read_text(encoding="utf-8") != text]
    assert stale == [], "run: python -m tools.export_contracts"


def test_every_rpc_method_and_event_is_described():
    text = (DOCS / "contracts.md").read_text(encoding="utf-8")
    for qualified in rpc_methods():
        service, method = qualified.split(".")
        assert f"### {service}" in text and f"`{method}`" in text, qualified
    for qualified in events():
        assert f"`{qualified}`" in text, qualified


def test_every_error_code_is_documented():
    """Front-end teams branch on these codes: each one in swms/error_codes.py (or errors.py) has a row in contracts.md."""
    codes = [code for name in ("error_codes.py", "errors.py")
             for code in re.findall(r'^([A-Z_]+) = "\1"', (REPO_ROOT / "swms" / name).read_text(encoding="utf-8"), re.M)]
    text = (DOCS / "contracts.md").read_text(encoding="utf-8")
    assert len(codes) > 40
    assert [code for code in codes if f"`{code}`" not in text] == []


def test_every_environment_variable_is_documented():
    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    for config in sorted((REPO_ROOT / "services").glob("*/config.yaml")):
        service = config.parent.name.upper()
        for variable in re.findall(r"\$\{([A-Z0-9_]+)", config.read_text(encoding="utf-8")):
            generic = variable.replace(f"{service}_", "<SERVICE>_", 1)
            assert f"`{variable}`" in text or f"`{generic}`" in text, f"{config.parent.name}: {variable}"
