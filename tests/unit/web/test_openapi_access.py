"""The OpenAPI document and its Swagger UI are for signed-in readers (only /healthz is public)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from worklist.accounts_models import Role


def test_the_openapi_document_needs_the_read_permission(client: TestClient, token_for):
    refused = client.get("/api/v1/openapi.json")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    token = token_for(Role.VIEWER, "read")
    document = client.get("/api/v1/openapi.json", headers={"Authorization": f"Bearer {token}"})
    assert document.status_code == 200
    assert document.json()["info"]["title"] == "RadGround"
    assert document.json() == client.app.openapi()  # the application's own document


def test_no_swagger_ui_that_would_load_scripts_from_a_cdn(client: TestClient, token_for):
    token = token_for(Role.VIEWER, "read")
    page = client.get("/api/v1/docs", headers={"Authorization": f"Bearer {token}"})
    assert page.status_code == 404


def test_the_documents_own_routes_are_not_in_it(client: TestClient):
    paths = client.app.openapi()["paths"]
    assert "/api/v1/openapi.json" not in paths
