"""Notification's operator command line for agencies' webhooks: register (secret shown once, kept
sealed), list, disable/enable, replay and deliveries, against a migrated SQLite database."""
import json

from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services.notification import cli, webhooks
from services.notification.models import WebhookEndpoint, audit
from swms.db import dispose_engine, engine_for
from swms.migrations import upgrade


def test_register_list_disable_enable_replay(tmp_path, capsys):
    db_url = f"sqlite:///{tmp_path / 'notification.db'}"
    upgrade("notification", db_url)
    key = tmp_path / "webhook-secrets.key"
    key.write_bytes(Fernet.generate_key())
    config = tmp_path / "config.yaml"
    config.write_text(f"DB_URL: {db_url}\nWEBHOOK_SECRETS_KEY_FILE: {key}\n", encoding="utf-8")
    base = ["--config", str(config), "--actor", "zhang"]
    try:
        assert cli.main(base + ["register-webhook", "--agency", "北京市人社局", "--url", "https://hr.example.gov.cn/h",
                                "--admin-email", "ops@hr.example.gov.cn", "--event-type", "certificate_revoked"]) == 0
        out = capsys.readouterr().out
        secret = out.split("secure channel): ")[1].strip()
        assert secret.startswith("whsec_")
        sessions = sessionmaker(engine_for(db_url))
        with sessions() as session:
            endpoint = session.execute(select(WebhookEndpoint)).scalar_one()
            assert secret not in endpoint.secret_encrypted
            assert webhooks.SecretBox.from_file(str(key)).open(endpoint.secret_encrypted) == secret
            assert json.loads(endpoint.event_types) == ["certificate_revoked"]
            assert audit.for_entity(session, endpoint.endpoint_id)[0]["actor"] == "cli:zhang"
        assert cli.main(base + ["list-webhooks"]) == 0
        assert f"{endpoint.endpoint_id}  active" in capsys.readouterr().out
        assert cli.main(base + ["disable-webhook", endpoint.endpoint_id, "--reason", "机构要求暂停"]) == 0
        assert cli.main(base + ["replay-webhook", endpoint.endpoint_id, "--since", "2026-01-01T00:00:00Z"]) == 2
        assert "停用" in capsys.readouterr().err
        assert cli.main(base + ["enable-webhook", endpoint.endpoint_id, "--reason", "机构已恢复"]) == 0
        assert cli.main(base + ["replay-webhook", endpoint.endpoint_id, "--since", "2026-01-01T00:00:00Z"]) == 0
        assert "0 event(s) queued" in capsys.readouterr().out
        assert cli.main(base + ["register-webhook", "--agency", "x", "--url", "http://hr.example.gov.cn/h",
                                "--admin-email", "ops@hr.example.gov.cn"]) == 2
        assert "url" in capsys.readouterr().err
    finally:
        dispose_engine(db_url)
