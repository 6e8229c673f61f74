"""Domain entries as a site owner writes them (issue 31): harmless spellings are normalised, and the widget's answer
shows each entry as stored with what it admits."""

from __future__ import annotations

import pytest

from tests.api.conftest import Admin, assert_problem

pytestmark = pytest.mark.wirings("embedded", "production", "managed")


def test_a_trailing_slash_and_a_default_port_are_stored_normalised_and_explained(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    answer = org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains",
                        json={"domains": ["www.example.com/", "example.com:443", "localhost:3000", "*.shop.example.org"]})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["domains"] == ["www.example.com", "example.com", "localhost:3000", "*.shop.example.org"]
    admits = {d["entry"]: d["admits"] for d in body["domains_explained"]}
    assert admits["example.com"] == "https://example.com (port 443 only)"
    assert admits["localhost:3000"].startswith("http://localhost:3000 and https://localhost:3000")
    assert "not shop.example.org itself" in admits["*.shop.example.org"]


def test_a_path_is_refused_naming_the_entry_and_saying_what_an_entry_may_be(org_a: Admin) -> None:
    widget = org_a.widget(domains=["example.com"])
    answer = org_a.call("PUT", f"/v1/widgets/{widget['id']}/domains", json={"domains": ["example.com", "example.com/shop"]})
    problem = assert_problem(answer, 400, "invalid_request")
    (error,) = problem["errors"]
    assert error["field"] == "domains[1]" and "must not contain a path" in error["message"]
    assert "https only" in error["message"]
