from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atproto_video.core.migrate import head_revision
from tests.support.postgres import PostgresServer


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "atproto_video.cli", *args],
        env={k: v for k, v in os.environ.items() if not k.startswith("VIDEO_")} | env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_lists_the_commands(tmp_path: Path) -> None:
    out = run(["--help"], {}, tmp_path)
    assert out.returncode == 0
    for command in ("serve", "migrate", "transcode", "operator", "try-upload"):
        assert command in out.stdout
    for command in ("serve", "migrate", "transcode", "operator", "try-upload"):
        sub = run([command, "--help"], {}, tmp_path)
        assert sub.returncode == 0 and "usage: atproto-video" in sub.stdout


def test_migrate_creates_the_embedded_database(tmp_path: Path) -> None:
    env = {"VIDEO_SERVICE_DID": "did:web:video.test", "VIDEO_DATA_DIR": str(tmp_path / "d")}
    out = run(["migrate"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert head_revision() in out.stdout
    assert (tmp_path / "d" / "video.sqlite3").is_file()


@pytest.mark.postgres
def test_migrate_against_postgres(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_database()
    env = {"VIDEO_SERVICE_DID": "did:web:video.test", "VIDEO_DB_URL": url}
    out = run(["migrate"], env, tmp_path)
    assert out.returncode == 0, out.stderr
    assert head_revision() in out.stdout


def test_bad_config_stops_with_one_line(tmp_path: Path) -> None:
    out = run(["serve"], {"VIDEO_SERVICE_DID": "did:web:x", "VIDEO_PORT": "eighty"}, tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "VIDEO_PORT" in lines[0]
    missing = run(["serve"], {}, tmp_path)
    assert missing.returncode == 2 and "VIDEO_SERVICE_DID" in missing.stderr


def test_the_operator_command_says_what_is_missing_without_its_extra(tmp_path: Path) -> None:
    """Without kopf the subcommand stays listed and explains itself, instead of vanishing."""
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class _NoKopf:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'kopf' or name.startswith('kopf.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'kopf'\", name='kopf')\n"
        "sys.meta_path.insert(0, _NoKopf())\n"
    )
    env = {"PYTHONPATH": str(tmp_path), "VIDEO_SERVICE_DID": "did:web:video.test",
           "VIDEO_DB_URL": "postgresql://u:p@127.0.0.1:9/v"}
    listed = run(["--help"], env, tmp_path)
    assert listed.returncode == 0 and "operator" in listed.stdout
    out = run(["operator"], env, tmp_path)
    assert out.returncode == 2
    assert "atproto-video[operator]" in out.stderr and "kopf" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_the_worker_entrypoint_loads_only_the_transcoder(tmp_path: Path) -> None:
    """``atproto-video transcode`` runs once per worker Job, per segment of a long video:
    it must not pay for the other subcommands' stacks (HTTP client, JWT, kopf, database,
    web framework, Kubernetes client; boto3 loads only for object storage), nor for the
    service's asyncio and SQLite (about 0.04 CPU-s of each worker's start)."""
    script = (
        "import sys\n"
        "from atproto_video.cli import main\n"
        "code = main(['transcode', 'in.mp4', 'out', '--target', 'nonsense'])\n"
        "heavy = ('httpx', 'jwt', 'kopf', 'sqlalchemy', 'fastapi', 'starlette', 'kubernetes',\n"
        "         'boto3', 'cryptography', 'asyncpg', 'uvicorn', 'asyncio', 'sqlite3')\n"
        "print(code, sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, cwd=tmp_path, check=False)
    assert out.stdout.split(None, 1) == ["2", "[]\n"], out.stderr
