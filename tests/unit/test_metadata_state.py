"""A metadata listener's bug surfaces: the others still see the change, then the applier is told."""

from __future__ import annotations

import pytest

from strom.node.metadata.image import MetadataDelta, MetadataImage
from strom.node.metadata.state import MetadataListenerError, MetadataState


def test_a_failing_listener_surfaces_after_every_listener_has_seen_the_change() -> None:
    state = MetadataState("c")
    seen: list[str] = []

    def broken(image: MetadataImage, delta: MetadataDelta) -> None:
        seen.append("broken")
        raise KeyError("a listener bug")

    def healthy(image: MetadataImage, delta: MetadataDelta) -> None:
        seen.append("healthy")

    state.subscribe(broken)
    state.subscribe(healthy)
    delta = MetadataDelta()
    delta.acls_changed = True
    with pytest.raises(MetadataListenerError, match="a listener bug") as failure:
        state._publish(delta)
    assert seen == ["broken", "healthy"]
    assert isinstance(failure.value.__cause__, KeyError)


def test_listeners_that_work_raise_nothing() -> None:
    state = MetadataState("c")
    calls: list[MetadataDelta] = []
    state.subscribe(lambda image, delta: calls.append(delta))
    delta = MetadataDelta()
    state._publish(delta)
    assert calls == [delta]
