"""The access API's messages become the one Principal and Project models, and a message the
model refuses is INVALID_ARGUMENT in the model's own words."""

from __future__ import annotations

import pytest

from broker.access.model import Role
from broker.errors import BrokerError, ErrorCode
from broker.grpc.codec.access import (
    principal_from_proto,
    principal_to_proto,
    project_from_proto,
)
from qtestbed.v1 import access_pb2 as pb


def test_a_project_without_a_weight_weighs_one_and_a_zero_weight_is_refused() -> None:
    assert project_from_proto(pb.Project(name="lab")).weight == 1
    assert project_from_proto(pb.Project(name="lab", weight=3)).weight == 3
    with pytest.raises(BrokerError) as refused:
        project_from_proto(pb.Project(name="lab", weight=0))
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert "weight must be at least 1" in refused.value.detail


@pytest.mark.parametrize(
    ("message", "words"),
    [
        (pb.Principal(name="carol", tier="open"), "at least one role"),
        (pb.Principal(name="carol", tier="open", roles=["wizard"]), "roles are researcher"),
        (pb.Principal(name="", tier="open", roles=["researcher"]), "printable characters"),
        (pb.Principal(name="carol", roles=["researcher"]), "a tier is required"),
    ],
)
def test_a_principal_the_model_refuses_is_invalid_argument(
    message: pb.Principal, words: str
) -> None:
    with pytest.raises(BrokerError) as refused:
        principal_from_proto(message)
    assert refused.value.code is ErrorCode.INVALID_ARGUMENT
    assert words in refused.value.detail


def test_a_principal_survives_the_round_trip() -> None:
    message = pb.Principal(
        name="carol",
        tier="open",
        roles=["operator", "researcher"],
        projects=["lab", "lab", "ops"],  # a repeated project is said once
        licences=["EAR-4A906"],
    )
    principal = principal_from_proto(message)
    assert principal.roles == frozenset({Role.OPERATOR, Role.RESEARCHER})
    assert principal.projects == ("lab", "ops")
    assert principal_from_proto(principal_to_proto(principal)) == principal
