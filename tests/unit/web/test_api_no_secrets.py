"""The HTTP API never hands out a destination's secrets: with a FHIR destination holding a
bearer token in the web process's pipeline context, no GET answer of the API and no schema of
its OpenAPI document carries the token or a field meant for one."""

from __future__ import annotations

import dataclasses
import json

import pytest

from web.context import WebContext
from worklist.accounts_models import Role
from worklist.destinations import FhirTarget, HttpAuth
from worklist.routing import Route

TOKEN = "s3cr3t-ehr-token-9c1"
SECRET_FIELDS = {"token", "password", "auth", "token_env", "token_file", "password_env",
                 "password_file", "client_key", "tls"}


@pytest.fixture
def web_context(web_context: WebContext) -> WebContext:
    ehr = FhirTarget(url="https://ehr.example/fhir", auth=HttpAuth.bearer(TOKEN), name="EHR")
    pipeline = dataclasses.replace(
        web_context.pipeline,
        routes=(Route("cxr", modalities=frozenset({"DX"}), destinations=("EHR",)),),
        destinations={"EHR": ehr},
    )
    return dataclasses.replace(web_context, pipeline=pipeline)


def _properties(node: object) -> set[str]:
    if isinstance(node, dict):
        properties = node.get("properties")
        found = set(properties) if isinstance(properties, dict) else set()
        return found.union(*(_properties(value) for value in node.values()))
    if isinstance(node, list):
        return set().union(*(_properties(value) for value in node))
    return set()


def test_no_api_answer_or_schema_carries_a_destination_secret(client, token_for):
    reader = {"Authorization": f"Bearer {token_for(Role.ADMIN, 'read')}"}
    document = client.get("/api/v1/openapi.json", headers=reader).json()
    assert not _properties(document) & SECRET_FIELDS
    listed = [path for path, operations in document["paths"].items()
              if "get" in operations and "{" not in path]
    assert "/api/v1/routes" in listed
    for path in listed:
        answer = client.get(path, headers=reader)
        assert TOKEN not in answer.text, path
    routes = client.get("/api/v1/routes", headers=reader).json()
    assert routes[0]["destinations"] == ["EHR"] and TOKEN not in json.dumps(routes)
