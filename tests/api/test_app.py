"""Every endpoint over a plain-data SiteReadModel: answers, 404s and 422s, OpenAPI, page."""

from __future__ import annotations

import ast
import math
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from laterne.api.app import create_app
from laterne.models.snapshot import DeviceView, DriftRecord, QueueStatus, SiteSnapshot
from laterne.models.values import Quality

from .conftest import T0, FakeReadModel, make_loop, make_snapshot

API_DIR = Path(__file__).resolve().parents[2] / "api"


def iso(ts: datetime) -> str:
    return ts.isoformat()


# -- health and site -----------------------------------------------------------------------------


async def test_health_is_degraded_but_200_while_a_device_is_not_good(
    client: httpx.AsyncClient,
) -> None:
    r = await client.get("/api/health")  # seg-ctl-1 is offline
    assert r.status_code == 200
    body = r.json()
    assert {k: body[k] for k in ("status", "devices_not_good", "cycle", "last_cycle_at")} == {
        "status": "degraded",
        "devices_not_good": 1,
        "cycle": 42,
        "last_cycle_at": "2024-11-05T22:00:00Z",
    }
    assert body["problems"] == ["1 device(s) not good: seg-ctl-1 (offline)"]
    assert body["loop"]["consecutive_failures"] == 0


async def test_health_is_ok_when_every_device_is_good(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    good = [d.model_copy(update={"quality": Quality.GOOD}) for d in read_model.snap.devices]
    read_model.snap = read_model.snap.model_copy(update={"devices": good})
    r = await client.get("/api/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
    assert r.json()["devices_not_good"] == 0


@pytest.mark.parametrize("quality", [Quality.STALE, Quality.FAULTY, Quality.OFFLINE])
async def test_health_counts_every_quality_but_good(
    read_model: FakeReadModel, client: httpx.AsyncClient, quality: Quality
) -> None:
    bad = [d.model_copy(update={"quality": quality}) for d in read_model.snap.devices]
    read_model.snap = read_model.snap.model_copy(update={"devices": bad})
    body = (await client.get("/api/health")).json()
    assert (body["status"], body["devices_not_good"]) == ("degraded", 2)


async def test_health_before_the_first_cycle(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    read_model.snap = read_model.snap.model_copy(update={"ts": None, "cycle": 0})
    read_model.loop = make_loop(since_success_s=3.0)
    r = await client.get("/api/health")
    body = r.json()
    assert r.status_code == 200
    assert (body["status"], body["cycle"], body["last_cycle_at"]) == ("degraded", 0, None)


def _all_good(read_model: FakeReadModel) -> None:
    good = [d.model_copy(update={"quality": Quality.GOOD}) for d in read_model.snap.devices]
    read_model.snap = read_model.snap.model_copy(update={"devices": good})


async def test_health_says_failing_while_cycles_fail(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    _all_good(read_model)
    read_model.loop = make_loop(since_success_s=12.0, failures=1, error="RuntimeError: boom")
    r = await client.get("/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failing"
    assert body["problems"] == ["1 cycle(s) failed in a row: RuntimeError: boom"]
    assert body["loop"]["last_error"] == "RuntimeError: boom"


@pytest.mark.parametrize(("since_s", "code"), [(29.0, 200), (31.0, 503)])
async def test_health_is_503_once_the_loop_stalls(
    read_model: FakeReadModel, client: httpx.AsyncClient, since_s: float, code: int
) -> None:
    """Three cycle periods (10 s each) without a successful cycle: stalled, 503."""
    _all_good(read_model)
    read_model.loop = make_loop(since_success_s=since_s, failures=3, error="HistoryError: locked")
    r = await client.get("/api/health")
    assert r.status_code == code
    assert r.json()["status"] == ("stalled" if code == 503 else "failing")


async def test_health_is_degraded_while_the_history_does_not_take_writes(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    _all_good(read_model)
    read_model.queues = [
        QueueStatus(
            store="sqlite",
            writable=False,
            queued_readings=120,
            queued_records=4,
            max_readings=1_000_000,
            dropped_readings=0,
            last_error="database is locked",
        )
    ]
    body = (await client.get("/api/health")).json()
    assert body["status"] == "degraded"
    assert body["problems"] == [
        "history sqlite does not take writes (database is locked); "
        "120 readings and 4 records wait in memory"
    ]
    assert body["history"][0]["queued_readings"] == 120


async def test_site_is_the_whole_snapshot(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    r = await client.get("/api/site")
    assert r.status_code == 200
    assert SiteSnapshot.model_validate(r.json()) == read_model.snap


async def test_nan_in_a_view_becomes_null_not_a_500(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    seg = read_model.snap.segments[0].model_copy(update={"dim_pct": math.nan})
    read_model.snap = read_model.snap.model_copy(update={"segments": [seg]})
    r = await client.get("/api/site")
    assert r.status_code == 200
    assert r.json()["segments"][0]["dim_pct"] is None


async def test_each_request_reads_the_read_model_afresh(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    assert (await client.get("/api/health")).json()["cycle"] == 42
    read_model.snap = read_model.snap.model_copy(update={"cycle": 43})
    assert (await client.get("/api/health")).json()["cycle"] == 43


# -- devices, segments, buildings ----------------------------------------------------------------


async def test_devices(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/devices")
    assert r.status_code == 200
    assert [d["id"] for d in r.json()] == ["ctr-1", "seg-ctl-1"]
    DeviceView.model_validate(r.json()[0])


@pytest.mark.parametrize(
    ("quality", "ids"), [("good", ["ctr-1"]), ("offline", ["seg-ctl-1"]), ("stale", [])]
)
async def test_devices_filtered_by_quality(
    client: httpx.AsyncClient, quality: str, ids: list[str]
) -> None:
    r = await client.get("/api/devices", params={"quality": quality})
    assert r.status_code == 200
    assert [d["id"] for d in r.json()] == ids


async def test_devices_bad_quality_is_422_naming_the_choices(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/devices", params={"quality": "broken"})
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["query", "quality"]
    for choice in ("good", "stale", "faulty", "offline"):
        assert choice in err["msg"]


async def test_device_by_id(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/devices/seg-ctl-1")
    assert r.status_code == 200
    body = r.json()
    assert body["quality"] == "offline"
    assert body["last_error"] == "connection refused"
    assert body["last_good_at"] is None


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/devices/nope", "unknown device 'nope'; known: ctr-1, seg-ctl-1"),
        ("/api/segments/nope", "unknown segment 'nope'; known: main-st, park-rd"),
        ("/api/faults?segment=nope", "unknown segment 'nope'; known: main-st, park-rd"),
        ("/api/buildings/nope", "unknown building 'nope'; known: town-hall"),
        (
            "/api/readings?device_id=nope&point=count",
            "unknown device 'nope'; known: ctr-1, seg-ctl-1",
        ),
        (
            "/api/readings?device_id=ctr-1&point=nope",
            "unknown point 'nope' of device 'ctr-1'; known: count",
        ),
        (
            "/api/readings?device_id=seg-ctl-1&point=count",
            "unknown point 'count' of device 'seg-ctl-1'; known: (none)",
        ),
        ("/api/commands?device_id=nope", "unknown device 'nope'; known: ctr-1, seg-ctl-1"),
    ],
)
async def test_unknown_ids_are_404_listing_the_known(
    read_model: FakeReadModel, client: httpx.AsyncClient, path: str, message: str
) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert r.json() == {"detail": message}
    assert [name for name, _ in read_model.calls] == []  # refused before the history was asked


async def test_404_with_nothing_known(read_model: FakeReadModel, client: httpx.AsyncClient) -> None:
    read_model.snap = read_model.snap.model_copy(update={"buildings": []})
    r = await client.get("/api/buildings/x")
    assert r.json() == {"detail": "unknown building 'x'; known: (none)"}


async def test_404_lists_at_most_fifty_ids(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    template = read_model.snap.devices[0]
    many = [template.model_copy(update={"id": f"d{i:03d}"}) for i in range(60)]
    read_model.snap = read_model.snap.model_copy(update={"devices": many})
    detail = (await client.get("/api/devices/x")).json()["detail"]
    assert "d049" in detail
    assert "d050" not in detail
    assert detail.endswith(", … and 10 more")


async def test_segments(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/segments")
    assert r.status_code == 200
    assert [s["id"] for s in r.json()] == ["main-st", "park-rd"]
    park = (await client.get("/api/segments/park-rd")).json()
    assert park["flow_veh_h"] is None
    assert park["reason"] == "failsafe"
    assert park["dim_pct"] == 100.0


async def test_faults_and_burning_hours(client: httpx.AsyncClient) -> None:
    (fault,) = (await client.get("/api/faults")).json()
    assert fault["segment_id"] == "main-st" and fault["kind"] == "lamps_out"
    assert fault["lamps_out"] == 6
    assert fault["since"] == (T0 - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    assert (await client.get("/api/faults", params={"segment": "park-rd"})).json() == []
    assert len((await client.get("/api/faults", params={"segment": "main-st"})).json()) == 1
    main = (await client.get("/api/segments/main-st")).json()
    assert main["burning_h"] == 1234.5 and main["full_power_h"] == 700.25
    assert main["faults"] == ["lamps_out"]
    assert main["expected_power_w"] == 2900.0
    park = (await client.get("/api/segments/park-rd")).json()
    assert park["burning_h"] is None and park["faults"] == []


async def test_buildings(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/buildings")
    assert r.status_code == 200
    assert [b["id"] for b in r.json()] == ["town-hall"]
    hall = (await client.get("/api/buildings/town-hall")).json()
    assert hall["zones"][0] == {
        "id": "th-office",
        "temperature_c": 20.5,
        "setpoint_c": 21.0,
        "actual_setpoint_c": 21.0,
        "reason": "occupied",
        "occupied": True,
    }


# -- commands ------------------------------------------------------------------------------------


async def test_commands_newest_first_with_default_limit(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    r = await client.get("/api/commands")
    assert r.status_code == 200
    assert [c["value"] for c in r.json()] == [52.0, 51.0, 50.0]
    assert r.json()[1]["ok"] is False
    assert r.json()[1]["error"] == "device offline"
    assert read_model.calls[-1] == ("recent_commands", {"limit": 100, "device_id": None})


async def test_commands_limit_and_device(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    seg2 = read_model.snap.devices[1].model_copy(update={"id": "seg-ctl-2"})
    read_model.snap = read_model.snap.model_copy(
        update={"devices": [*read_model.snap.devices, seg2]}
    )
    r = await client.get("/api/commands", params={"limit": 1, "device_id": "seg-ctl-2"})
    assert r.status_code == 200
    assert [c["value"] for c in r.json()] == [52.0]
    assert read_model.calls[-1] == ("recent_commands", {"limit": 1, "device_id": "seg-ctl-2"})
    assert (await client.get("/api/commands", params={"limit": 1000})).status_code == 200


@pytest.mark.parametrize("limit", ["0", "-1", "1001", "ten"])
async def test_commands_bad_limit_is_422(
    read_model: FakeReadModel, client: httpx.AsyncClient, limit: str
) -> None:
    r = await client.get("/api/commands", params={"limit": limit})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]
    assert read_model.calls == []  # refused before the read model was asked


# -- readings ------------------------------------------------------------------------------------


async def test_readings_oldest_first_with_null_for_nan(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/readings", params={"device_id": "ctr-1", "point": "count"})
    assert r.status_code == 200
    body = r.json()
    assert [x["value"] for x in body] == [0.0, 1.0, 2.0, 3.0, 4.0, None]
    assert body[0] == {"ts": "2024-11-05T22:00:00Z", "value": 0.0, "quality": "good", "error": ""}
    assert body[-1]["quality"] == "offline"
    assert body[-1]["error"] == "timeout"


async def test_readings_window_and_limit(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    cet = timezone(timedelta(hours=1))
    since = (T0 + timedelta(minutes=1)).astimezone(cet)
    until = T0 + timedelta(minutes=4)
    params = {"device_id": "ctr-1", "point": "count", "since": iso(since), "until": iso(until)}
    r = await client.get("/api/readings", params=params)
    assert r.status_code == 200
    assert [x["value"] for x in r.json()] == [1.0, 2.0, 3.0]
    _, args = read_model.calls[-1]
    assert args["since"] == since and args["since"].utcoffset() is not None
    assert args["until"] == until
    r = await client.get("/api/readings", params={**params, "limit": 2})
    assert [x["value"] for x in r.json()] == [1.0, 2.0]


async def test_readings_accept_z_suffix(client: httpx.AsyncClient) -> None:
    params = {"device_id": "ctr-1", "point": "count", "since": "2024-11-05T22:04:00Z"}
    r = await client.get("/api/readings", params=params)
    assert r.status_code == 200
    assert [x["value"] for x in r.json()] == [4.0, None]


@pytest.mark.parametrize("name", ["since", "until"])
async def test_readings_naive_datetime_is_422(
    read_model: FakeReadModel, client: httpx.AsyncClient, name: str
) -> None:
    params = {"device_id": "ctr-1", "point": "count", name: "2024-11-05T22:00:00"}
    r = await client.get("/api/readings", params=params)
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["query", name]
    assert "timezone" in err["msg"]
    assert read_model.calls == []


@pytest.mark.parametrize("gap_min", [0, -1])
async def test_readings_since_not_before_until_is_422(
    client: httpx.AsyncClient, gap_min: int
) -> None:
    params = {
        "device_id": "ctr-1",
        "point": "count",
        "since": iso(T0),
        "until": iso(T0 + timedelta(minutes=gap_min)),
    }
    r = await client.get("/api/readings", params=params)
    assert r.status_code == 422
    [err] = r.json()["detail"]
    assert err["loc"] == ["query", "until"]
    assert "must be after since" in err["msg"]


@pytest.mark.parametrize(
    "params",
    [
        {"point": "count"},
        {"device_id": "ctr-1"},
        {"device_id": "ctr-1", "point": "count", "since": "yesterday"},
        {"device_id": "ctr-1", "point": "count", "limit": "0"},
        {"device_id": "ctr-1", "point": "count", "limit": "10001"},
    ],
)
async def test_readings_bad_query_is_422(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    assert (await client.get("/api/readings", params=params)).status_code == 422


# -- OpenAPI, docs, page, layering ---------------------------------------------------------------


async def test_openapi_schema(client: httpx.AsyncClient) -> None:
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["info"]["title"] == "Laterne"
    assert schema["info"]["version"]
    assert set(schema["paths"]) == {
        "/api/health",
        "/api/site",
        "/api/devices",
        "/api/devices/{device_id}",
        "/api/devices/{device_id}/states",
        "/api/history",
        "/api/aggregates",
        "/api/segments",
        "/api/segments/{segment_id}",
        "/api/faults",
        "/api/compliance",
        "/api/buildings",
        "/api/buildings/{building_id}",
        "/api/commands",
        "/api/readings",
        "/api/devices/{device_id}/drifts",
    }
    site_schema = schema["paths"]["/api/site"]["get"]["responses"]["200"]["content"]
    assert site_schema["application/json"]["schema"]["$ref"].endswith("/SiteSnapshot")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_work_offline(client: httpx.AsyncClient, page: str) -> None:
    r = await client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    # no CDN and no absolute URL at all: every asset is served by the app itself
    assert re.findall(r"https?://[^\s\"'<>)]+", html) == []
    assets = re.findall(r"""(?:src|href)=["']?([^"'\s>]+\.(?:js|css|png))""", html)
    assert any(a.endswith(".js") for a in assets), html
    if page == "/docs":
        assert any(a.endswith(".css") for a in assets), html
        assert "/openapi.json" in html
        assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io
    for url in assets:
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content, url
        if not url.endswith(".png"):
            assert len(asset.content) > 10_000, url  # the real bundle, not a stub


async def test_index_page_is_served_and_self_contained(client: httpx.AsyncClient) -> None:
    r = await client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "<script>" in html and 'fetch("api/site"' in html
    assert "http://" not in html and "https://" not in html  # no CDN, no external assets
    assert "<script src" not in html and "<link" not in html
    assert "innerHTML" not in html.split("<script>", 1)[1]  # text only via textContent


def test_create_app_needs_no_running_site() -> None:
    app = create_app(FakeReadModel(snap=make_snapshot()))
    assert app.title == "Laterne"


def test_api_never_imports_drivers() -> None:
    offenders = []
    for path in API_DIR.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            for name in names:
                if "drivers" in name.split("."):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []


async def test_device_state_changes_newest_first(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/devices/ctr-1/states")
    assert r.status_code == 200
    body = r.json()
    assert [s["quality"] for s in body] == ["good", "offline", "good"]
    assert body[1]["last_error"] == "timeout"
    r = await client.get("/api/devices/ctr-1/states", params={"limit": 1})
    assert len(r.json()) == 1


async def test_device_state_changes_unknown_device_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/devices/nope/states")
    assert r.status_code == 404
    assert "unknown device 'nope'" in r.json()["detail"]
    r = await client.get("/api/devices/ctr-1/states", params={"limit": 0})
    assert r.status_code == 422


async def test_history_status_shows_the_mirror_backlog(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/history")
    assert r.status_code == 200
    body = r.json()
    assert body["sqlite_bytes"] == 4096
    assert body["mirrors"][0]["pending_lines"] == 1200
    assert body["mirrors"][0]["in_outage"] is True


async def test_aggregates_of_one_point(client: httpx.AsyncClient) -> None:
    r = await client.get("/api/aggregates", params={"device_id": "ctr-1", "point": "count"})
    assert r.status_code == 200
    body = r.json()
    assert [a["mean"] for a in body] == [10.0, 11.0, 12.0]
    assert body[1]["good_count"] == 14
    r = await client.get(
        "/api/aggregates",
        params={"device_id": "ctr-1", "point": "count", "since": "2024-11-05T22:10:00Z"},
    )
    assert r.status_code == 200


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"device_id": "nope", "point": "count"}, 404),
        ({"device_id": "ctr-1", "point": "nope"}, 404),
        ({"device_id": "ctr-1", "point": "count", "since": "2024-11-05T22:00:00"}, 422),
        ({"device_id": "ctr-1", "point": "count", "limit": 0}, 422),
    ],
)
async def test_aggregates_refuses_bad_requests(
    client: httpx.AsyncClient, params: dict[str, object], status: int
) -> None:
    r = await client.get("/api/aggregates", params=params)  # type: ignore[arg-type]
    assert r.status_code == status


async def test_readings_newest_first_with_order_desc(client: httpx.AsyncClient) -> None:
    params = {"device_id": "ctr-1", "point": "count", "order": "desc", "limit": 2}
    r = await client.get("/api/readings", params=params)
    assert r.status_code == 200
    assert [x["ts"] for x in r.json()] == ["2024-11-05T22:05:00Z", "2024-11-05T22:04:00Z"]
    bad = await client.get(
        "/api/readings", params={"device_id": "ctr-1", "point": "count", "order": "newest"}
    )
    assert bad.status_code == 422


async def test_drift_events_of_one_device(
    read_model: FakeReadModel, client: httpx.AsyncClient
) -> None:
    read_model.drifts = [
        DriftRecord(
            ts=T0 + timedelta(minutes=m),
            device_id="seg-ctl-1",
            point="dim_pct",
            commanded=50.0,
            actual=0.0,
            detail="dim_pct: commanded 50 but the device holds 0; re-sending",
            attempt=m + 1,
            resent=True,
        )
        for m in range(3)
    ]
    r = await client.get("/api/devices/seg-ctl-1/drifts", params={"limit": 2})
    assert r.status_code == 200
    assert [d["attempt"] for d in r.json()] == [3, 2]
    assert (await client.get("/api/devices/nope/drifts")).status_code == 404
