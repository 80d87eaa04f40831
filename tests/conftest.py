"""Shared fixtures: real backends, a real control plane process, a real Envoy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from controlplane.localrun import Backend, ControlPlane, Envoy, free_port
from tests.support import Stack


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", help="rewrite golden files instead of comparing"
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def make(name: str) -> Backend:
        b = Backend(name).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    stacks: list[Stack] = []

    def make(
        files: dict[str, str], extra_args: list[str] | None = None, protocol: str = "delta"
    ) -> Stack:
        config = tmp_path / "config"
        config.mkdir(exist_ok=True)
        for name, text in files.items():
            (config / name).write_text(text)
        web = free_port()
        cp = ControlPlane(config, tmp_path, {"web": web}, extra_args=extra_args)
        envoy = Envoy(cp.xds_port, tmp_path, protocol=protocol)
        stack = Stack(config=config, workdir=tmp_path, controlplane=cp, envoy=envoy, web_port=web)
        stacks.append(stack)  # registered first: a start that fails still gets cleaned up
        cp.start()
        envoy.start()
        return stack

    yield make
    for s in stacks:
        s.close()
        s.envoy.stop()
        s.controlplane.stop()
