"""SUMO traffic scenarios: road network -> time-of-day demand -> mesoscopic simulation -> gnnsim dataset.

Pipeline (``generate``):

1. ``build_network``: ``netgenerate`` (grid, spider or random family) writes plain XML; each street gets a
   road class (arterial / collector / local: speed limit, lanes, priority) and ``netconvert`` builds the
   network. Built once per scenario, shared by all days.
2. ``make_demand``: one day of trips with morning and evening peaks (commuters from the periphery to the
   centre in the morning and back in the evening), day-to-day jitter of volume and peak times, weaker
   weekends, and a few incidents (a segment slowed to a crawl for 30-90 min by a variable speed sign).
3. ``simulate_day``: ``sumo --mesosim`` (signalised junctions charged by their green split, so queues grow
   and dissolve without gridlock) records each segment's mean speed every ``interval_s`` (edgeData
   ``period``) and each vehicle's segment exit times (``--vehroute-output.exit-times``); the exit times
   give the route travel-time labels (``gnnsim.traffic.routes``) and ``entry_speed``, the speed that the
   vehicles entering a segment in an interval actually achieved on it.

Data layout (``out_dir``)::

    train.h5 valid.h5 test.h5     one trajectory per simulated day (schema: SPEED_SCHEMA)
    routes/{split}.h5             ETA labels of the same days (schema: routes.ROUTE_SCHEMA)
    network/net.net.xml           the SUMO network (+ the plain XML it was built from)
    scenario.json                 config, seeds, SUMO version, command lines, per-day statistics

Segments (SUMO edges, internal ones excluded) are the nodes; ``senders -> receivers`` are the successor
segments through junction connections (traffic flows from sender to receiver). Speeds are in m/s; an
interval in which no vehicle was on a segment has ``mask = False`` and ``speed = 0``. ``speed`` is
causal (known at the end of its interval) and is the model input and the real-time baseline's reading;
``entry_speed`` is known only once those vehicles have left, so it is a training/evaluation target only.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gnnsim.data.format import dynamic, static, write_split
from gnnsim.data.generate import trajectory_seeds
from gnnsim.files import write_text_atomic
from gnnsim.traffic.routes import make_route_set, sample_label_windows, write_routes

SUMO_PIN = "eclipse-sumo==1.28.0"
DAY_S = 86400.0

SPEED_SCHEMA = {
    "speed": dynamic("float32", "nodes", 1),  # m/s, 0 where mask is False
    "mask": dynamic("bool", "nodes", 1),  # a vehicle was on the segment during the interval
    # length / mean traversal time of the vehicles that *entered* the segment in the interval (from exit
    # times): what the ETA walk reads. Not causal (known only once they left): a target, never an input.
    "entry_speed": dynamic("float32", "nodes", 1),
    "entry_mask": dynamic("bool", "nodes", 1),
    "time_of_day": dynamic("float32"),  # start of the interval, fraction of a day in [0, 1)
    "day_of_week": dynamic("int32"),  # 0 = Monday
    "length": static("float32", "nodes"),  # m
    "speed_limit": static("float32", "nodes"),  # m/s
    "lanes": static("int32", "nodes"),
    "pos": static("float32", "nodes", 2),  # segment midpoint (m)
    "senders": static("int32", "edges"),  # upstream segment
    "receivers": static("int32", "edges"),  # downstream successor segment
    "edge_weight": static("float32", "edges"),  # 1 (the METR-LA converter stores kernel weights here)
}

# road class -> (speed limit m/s, lanes, junction priority)
ROAD_CLASSES = {"arterial": (16.67, 2, 3), "collector": (13.89, 1, 2), "local": (8.33, 1, 1)}


@dataclass(frozen=True)
class TrafficScenarioConfig:
    """A road network, a demand model and the simulation settings; the seed is passed separately."""

    # network
    network: str = "grid"  # "grid" | "spider" | "rand"
    grid_size: int = 9  # grid: junctions per side (9 -> 288 segments)
    block_length: float = 250.0  # m: grid street length, spider ring spacing, rand minimum edge length
    spider_arms: int = 10
    spider_circles: int = 6
    rand_iterations: int = 120
    arterial_every: int = 3  # grid: every k-th street, spider: every k-th arm is an arterial
    three_lane_share: float = 0.3  # share of arterial streets with 3 lanes instead of 2
    local_share: float = 0.4  # share of the other streets that are 30 km/h local roads
    # demand (weekday mean; per-day jitter below)
    trips_per_day: int = 68000
    peak_share: float = 0.6  # share of weekday trips in the two commuter peaks
    morning_peak_h: float = 8.0
    evening_peak_h: float = 17.5
    peak_width_h: float = 0.8  # Gaussian sigma of each peak
    weekend_factor: float = 0.6  # weekend volume relative to weekdays (no commuter peaks)
    volume_jitter: float = 0.1  # log-normal sigma of the daily volume
    peak_jitter_h: float = 0.3  # sigma of the daily shift of each peak
    min_trip_fraction: float = 0.35  # min straight-line trip distance, as a share of the network's diagonal
    incidents_per_day: float = 2.0  # Poisson mean; an incident slows one edge to incident_speed
    incident_speed: float = 2.0  # m/s
    incident_minutes: tuple[float, float] = (30.0, 90.0)
    # junctions: "traffic_light" or "priority"; the meso model either checks signal phases and right of way
    # ("control": realistic queues, but gridlock-prone near capacity) or charges the expected delay of the
    # green split / a minor-road penalty ("penalty": capacity drops smoothly, no deadlocks)
    junction_type: str = "traffic_light"
    junction_model: str = "penalty"
    minor_penalty_s: float = 4.0
    rerouting_share: float = 0.2  # vehicles with a rerouting device (navigation), re-planning every 5 min
    # simulation and recording
    begin_h: float = 0.0  # simulated day window [begin_h, end_h) in hours
    end_h: float = 24.0
    drain_s: float = 3600.0  # keep simulating after end_h so that trips can finish
    interval_s: float = 300.0  # speed aggregation interval
    start_day_of_week: int = 3  # day 0 is a Thursday: with 10/2/2 days the test days are Tue and Wed
    # ETA labels
    route_min_segments: int = 10
    route_max_segments: int = 30
    # splits (consecutive days: train, then valid, then test)
    train_days: int = 10
    valid_days: int = 2
    test_days: int = 2

    def __post_init__(self):
        if self.network not in ("grid", "spider", "rand"):
            raise ValueError(f"network must be 'grid', 'spider' or 'rand', got {self.network!r}")
        if self.junction_type not in ("traffic_light", "priority"):
            raise ValueError(
                f"junction_type must be 'traffic_light' or 'priority', got {self.junction_type!r}"
            )
        if self.junction_model not in ("penalty", "control"):
            raise ValueError(f"junction_model must be 'penalty' or 'control', got {self.junction_model!r}")
        if not 0 <= self.begin_h < self.end_h <= 24:
            raise ValueError(f"need 0 <= begin_h < end_h <= 24, got {self.begin_h}, {self.end_h}")
        steps = (self.end_h - self.begin_h) * 3600 / self.interval_s
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(
                f"the day window ({self.end_h - self.begin_h} h) must be a multiple of interval_s"
            )
        if min(self.train_days, self.valid_days, self.test_days) < 0 or self.train_days < 1:
            raise ValueError("need train_days >= 1 and valid_days, test_days >= 0")

    @property
    def num_days(self) -> int:
        return self.train_days + self.valid_days + self.test_days

    @property
    def num_steps(self) -> int:
        return round((self.end_h - self.begin_h) * 3600 / self.interval_s)


# ---------------------------------------------------------------------------------------------------------
# SUMO binaries


def sumo_binary(name: str) -> str:
    """Return the path of a SUMO executable shipped by the eclipse-sumo wheel."""
    try:
        import sumo
    except ImportError:
        raise ImportError(f"SUMO is not installed: pip install {SUMO_PIN}") from None
    path = os.path.join(sumo.SUMO_HOME, "bin", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: SUMO binary '{name}' not found; reinstall with pip install {SUMO_PIN}"
        )
    return path


def _sumo_env() -> dict[str, str]:
    import sumo

    env = dict(os.environ)
    env["SUMO_HOME"] = sumo.SUMO_HOME
    return env


def sumo_version() -> str:
    """Return SUMO's version line, e.g. 'Eclipse SUMO sumo 1.28.0'."""
    out = subprocess.run(
        [sumo_binary("sumo"), "--version"], check=False, capture_output=True, text=True, env=_sumo_env()
    )
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


def _run(args: list[str], cwd: Path) -> str:
    """Run a SUMO tool in ``cwd`` (relative file names only) and return the command line it ran."""
    cmd = [sumo_binary(args[0]), *args[1:]]
    res = subprocess.run(cmd, cwd=cwd, check=False, capture_output=True, text=True, env=_sumo_env())
    if res.returncode != 0:
        tail = "\n".join((res.stdout + res.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{args[0]} failed (exit {res.returncode}) in {cwd}: {' '.join(args)}\n{tail}")
    return " ".join(args)


# ---------------------------------------------------------------------------------------------------------
# Network


@dataclass(frozen=True)
class Network:
    """The segment graph of a SUMO network (internal edges excluded), in net.xml order."""

    segment_ids: list[str]
    length: np.ndarray  # [N] m
    speed_limit: np.ndarray  # [N] m/s
    lanes: np.ndarray  # [N]
    pos: np.ndarray  # [N, 2] midpoint
    senders: np.ndarray  # [E] upstream segment
    receivers: np.ndarray  # [E] successor segment

    @property
    def num_segments(self) -> int:
        return len(self.segment_ids)

    def static_fields(self) -> dict[str, np.ndarray]:
        return {
            "length": self.length.astype(np.float32),
            "speed_limit": self.speed_limit.astype(np.float32),
            "lanes": self.lanes.astype(np.int32),
            "pos": self.pos.astype(np.float32),
            "senders": self.senders.astype(np.int32),
            "receivers": self.receivers.astype(np.int32),
            "edge_weight": np.ones(len(self.senders), np.float32),
        }


def read_network(net_file: str | os.PathLike) -> Network:
    """Parse a SUMO ``.net.xml``: segments, their length/speed limit/lanes/midpoint, and successor pairs."""
    root = ET.parse(net_file).getroot()
    junctions = {j.get("id"): (float(j.get("x")), float(j.get("y"))) for j in root.iter("junction")}
    ids, length, speed, lanes, pos = [], [], [], [], []
    for e in root.iter("edge"):
        if e.get("function") == "internal" or e.get("id", "").startswith(":"):
            continue
        ls = e.findall("lane")
        if not ls:
            raise ValueError(f"{net_file}: edge '{e.get('id')}' has no lanes")
        ids.append(e.get("id"))
        length.append(float(ls[0].get("length")))
        speed.append(max(float(lane.get("speed")) for lane in ls))
        lanes.append(len(ls))
        a, b = junctions[e.get("from")], junctions[e.get("to")]
        pos.append(((a[0] + b[0]) / 2, (a[1] + b[1]) / 2))
    index = {s: i for i, s in enumerate(ids)}
    pairs = set()
    for c in root.iter("connection"):
        f, t = c.get("from"), c.get("to")
        if f in index and t in index:
            pairs.add((index[f], index[t]))
    pairs = np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)
    return Network(
        segment_ids=ids,
        length=np.array(length),
        speed_limit=np.array(speed),
        lanes=np.array(lanes),
        pos=np.array(pos).reshape(-1, 2),
        senders=pairs[:, 0],
        receivers=pairs[:, 1],
    )


def _street_classes(cfg: TrafficScenarioConfig, nodes: dict, edges: list[dict], rng) -> dict[frozenset, str]:
    """Assign a road class to every street (an unordered node pair), by network family."""
    streets = sorted({frozenset((e["from"], e["to"])) for e in edges}, key=lambda s: sorted(s))
    xy = np.array(list(nodes.values()))
    centre = (xy.min(0) + xy.max(0)) / 2
    cls: dict[frozenset, str] = {}
    every = max(cfg.arterial_every, 1)

    def other(key):
        # one draw per line/ring/street so that both directions and whole lines share a class
        return "local" if rng.random() < cfg.local_share else "collector"

    if cfg.network == "grid":
        line_class: dict[tuple[str, int], str] = {}
        for s in streets:
            a, b = (nodes[n] for n in sorted(s))
            horizontal = abs(a[1] - b[1]) < 1e-6
            line = (
                ("h", round(a[1] / cfg.block_length)) if horizontal else ("v", round(a[0] / cfg.block_length))
            )
            if line not in line_class:
                line_class[line] = "arterial" if line[1] % every == every // 2 else other(line)
            cls[s] = line_class[line]
    elif cfg.network == "spider":
        ring_class: dict[int, str] = {}
        for s in streets:
            a, b = (np.array(nodes[n]) - centre for n in sorted(s))
            radial = abs(a[0] * b[1] - a[1] * b[0]) < 1e-3 * (np.linalg.norm(a) * np.linalg.norm(b) + 1)
            if radial:
                p = a if np.linalg.norm(a) > np.linalg.norm(b) else b
                arm = round(math.atan2(p[1], p[0]) / (2 * math.pi / cfg.spider_arms)) % cfg.spider_arms
                cls[s] = "arterial" if arm % every == 0 else "collector"
            else:
                ring = round(np.linalg.norm(a) / cfg.block_length)
                if ring not in ring_class:
                    ring_class[ring] = "collector" if ring == (cfg.spider_circles + 1) // 2 else other(ring)
                cls[s] = ring_class[ring]
    else:  # rand: arterial corridors = shortest paths between far-apart junctions, the rest drawn per street
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import shortest_path

        names = sorted(nodes)
        nid = {n: i for i, n in enumerate(names)}
        p = np.array([nodes[n] for n in names])
        i = np.array([nid[e["from"]] for e in edges])
        j = np.array([nid[e["to"]] for e in edges])
        w = np.linalg.norm(p[i] - p[j], axis=1) + 1e-3
        g = coo_matrix((w, (i, j)), shape=(len(names), len(names))).tocsr()
        n_corr = max(2, len(names) // 60)
        for _ in range(n_corr):
            u = int(rng.integers(len(names)))
            v = int(np.argmax(np.linalg.norm(p - p[u], axis=1)))
            _, pred = shortest_path(g, indices=u, return_predecessors=True)
            k = v
            while pred[k] >= 0:
                cls[frozenset((names[pred[k]], names[k]))] = "arterial"
                k = pred[k]
        for s in streets:
            cls.setdefault(s, other(s))
    return cls


def build_network(
    cfg: TrafficScenarioConfig, seed: int, workdir: str | os.PathLike
) -> tuple[Network, list[str]]:
    """Generate the road network in ``workdir`` (``net.net.xml``) and return it with the commands run."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sumo_seed = str(seed % 2**31)
    family = {
        "grid": ["--grid", "--grid.number", str(cfg.grid_size), "--grid.length", str(cfg.block_length)],
        "spider": [
            "--spider",
            "--spider.arm-number",
            str(cfg.spider_arms),
            "--spider.circle-number",
            str(cfg.spider_circles),
            "--spider.space-radius",
            str(cfg.block_length),
            "--spider.omit-center",
        ],
        "rand": [
            "--rand",
            "--rand.iterations",
            str(cfg.rand_iterations),
            "--rand.min-distance",
            str(cfg.block_length),
            "--rand.max-distance",
            str(2 * cfg.block_length),
        ],
    }[cfg.network]
    cmds = [
        _run(
            [
                "netgenerate",
                *family,
                "--seed",
                sumo_seed,
                "--no-turnarounds",
                "true",
                "--default.junctions.type",
                cfg.junction_type,
                "--plain-output-prefix",
                "plain",
                "-o",
                "netgenerate.net.xml",
            ],
            workdir,
        )
    ]
    # Re-class the streets in the plain edge file, then rebuild the network (connections recomputed).
    nod = ET.parse(workdir / "plain.nod.xml").getroot()
    nodes = {n.get("id"): (float(n.get("x")), float(n.get("y"))) for n in nod.iter("node")}
    edg_tree = ET.parse(workdir / "plain.edg.xml")
    edges = [dict(e.attrib) for e in edg_tree.getroot().iter("edge")]
    classes = _street_classes(cfg, nodes, edges, rng)
    arterial_lanes: dict[frozenset, int] = {}
    for e in edg_tree.getroot().iter("edge"):
        key = frozenset((e.get("from"), e.get("to")))
        speed, lanes, prio = ROAD_CLASSES[classes[key]]
        if (
            classes[key] == "arterial"
        ):  # lanes vary along arterials: some streets have three (and bottlenecks)
            lanes = arterial_lanes.setdefault(key, 3 if rng.random() < cfg.three_lane_share else 2)
        e.set("speed", f"{speed:.2f}")
        e.set("numLanes", str(lanes))
        e.set("priority", str(prio))
        for child in list(e):  # per-lane overrides from netgenerate, if any
            e.remove(child)
    edg_tree.write(workdir / "classed.edg.xml")
    cmds.append(
        _run(
            [
                "netconvert",
                "--node-files",
                "plain.nod.xml",
                "--edge-files",
                "classed.edg.xml",
                "--no-turnarounds",
                "true",
                "--seed",
                sumo_seed,
                "-o",
                "net.net.xml",
            ],
            workdir,
        )
    )
    return read_network(workdir / "net.net.xml"), cmds


# ---------------------------------------------------------------------------------------------------------
# Demand


def demand_profile(cfg: TrafficScenarioConfig, day_of_week: int, rng: np.random.Generator | None = None):
    """Return (hours [1440], relative departure rate [1440], day parameters) for one day on a 1-min grid.

    Background traffic is low at night and flat by day; weekdays add a morning and an evening commuter peak
    (Gaussians). With ``rng`` the day's volume, peak times and peak sizes are jittered.
    """
    h = (np.arange(1440) + 0.5) / 60.0
    sig = lambda x: 1 / (1 + np.exp(-x))
    background = 0.12 + 0.88 * sig((h - 6.5) / 0.6) * sig((21.5 - h) / 0.8)
    weekend = day_of_week >= 5
    jit = (lambda s: float(rng.normal(0, s))) if rng is not None else (lambda s: 0.0)
    params = {
        "volume": float(np.exp(jit(cfg.volume_jitter))) * (cfg.weekend_factor if weekend else 1.0),
        "morning_h": cfg.morning_peak_h + jit(cfg.peak_jitter_h),
        "evening_h": cfg.evening_peak_h + jit(cfg.peak_jitter_h),
        "morning_size": float(np.exp(jit(0.15))),
        "evening_size": float(np.exp(jit(0.15))),
        "weekend": bool(weekend),
    }
    gauss = lambda mu, s: np.exp(-0.5 * ((h - mu) / s) ** 2)
    bg = background / background.sum() * (1 - cfg.peak_share)
    if weekend:
        # no commuters; a broad midday bump carries the peak share
        m = np.zeros_like(h)
        e = gauss(13.5 + jit(cfg.peak_jitter_h), 2.5)
        e = e / e.sum() * cfg.peak_share * 0.6
    else:
        m = gauss(params["morning_h"], cfg.peak_width_h)
        e = gauss(params["evening_h"], cfg.peak_width_h * 1.2)
        m = m / m.sum() * cfg.peak_share / 2 * params["morning_size"]
        e = e / e.sum() * cfg.peak_share / 2 * params["evening_size"]
    return h, np.stack([bg, m, e]), params


def make_demand(cfg: TrafficScenarioConfig, net: Network, day_of_week: int, rng: np.random.Generator):
    """Draw one day of trips; return (trips XML text, incidents, day parameters).

    Trips go between segments of the largest strongly connected part of the network. Morning commuters
    travel from the periphery to the centre, evening commuters back; background trips are spread by lane
    length. Origin and destination lie at least ``min_trip_fraction`` of the network diagonal apart.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = net.num_segments
    g = coo_matrix((np.ones(len(net.senders)), (net.senders, net.receivers)), shape=(n, n))
    _, comp = connected_components(g, directed=True, connection="strong")
    ok = comp == np.bincount(comp).argmax()
    lo, hi = net.pos.min(0), net.pos.max(0)
    centre, diag = (lo + hi) / 2, float(np.linalg.norm(hi - lo))
    d = np.linalg.norm(net.pos - centre, axis=1) / (diag / 2)  # 0 at the centre, ~1 at the corners
    w_bg = net.length * net.lanes * ok
    w_centre = np.exp(-((d / 0.3) ** 2)) * net.length * ok
    w_edge = np.clip(d - 0.3, 0, None) * net.length * ok
    weights = [w / w.sum() for w in (w_bg, w_centre, w_edge)]

    hours, rates, params = demand_profile(cfg, day_of_week, rng)
    in_window = (hours >= cfg.begin_h) & (hours < cfg.end_h)
    rates = rates * in_window
    day_share = rates.sum() if rates.sum() > 0 else 1.0
    n_trips = int(rng.poisson(cfg.trips_per_day * params["volume"] * day_share))
    flat = rates.reshape(-1) / rates.sum()
    pick = rng.choice(flat.size, size=n_trips, p=flat)
    kind, minute = pick // 1440, pick % 1440
    depart = minute * 60.0 + rng.uniform(0, 60, n_trips)
    order = np.argsort(depart, kind="stable")  # SUMO wants trips sorted by departure
    depart, kind = depart[order], kind[order]
    # origin/destination weights per kind: 0 background, 1 morning (edge -> centre), 2 evening (back)
    o_w = [weights[0], weights[2], weights[1]]
    d_w = [weights[0], weights[1], weights[2]]
    origin = np.empty(n_trips, np.int64)
    dest = np.empty(n_trips, np.int64)
    min_d = cfg.min_trip_fraction * diag
    for k in range(3):
        idx = np.flatnonzero(kind == k)
        todo = idx
        for _ in range(50):
            if len(todo) == 0:
                break
            o = rng.choice(n, size=len(todo), p=o_w[k])
            t = rng.choice(n, size=len(todo), p=d_w[k])
            good = np.linalg.norm(net.pos[o] - net.pos[t], axis=1) >= min_d
            origin[todo[good]], dest[todo[good]] = o[good], t[good]
            todo = todo[~good]
        if len(todo):
            raise ValueError(f"could not draw trips {min_d:.0f} m long; lower min_trip_fraction")
    # incidents: an arterial or collector segment slowed to a crawl
    n_inc = int(rng.poisson(cfg.incidents_per_day))
    candidates = np.flatnonzero((net.speed_limit > ROAD_CLASSES["local"][0] + 0.1) & ok)
    incidents = []
    for _ in range(n_inc):
        seg = int(rng.choice(candidates))
        start = float(rng.uniform(max(cfg.begin_h, 6.0), min(cfg.end_h, 20.0)) * 3600)
        dur = float(rng.uniform(*cfg.incident_minutes) * 60)
        incidents.append({"segment": net.segment_ids[seg], "begin": round(start), "end": round(start + dur)})
    lines = ["<routes>", '    <vType id="car" speedDev="0.05"/>']
    for i in range(n_trips):
        lines.append(
            f'    <trip id="{i}" type="car" depart="{depart[i]:.2f}" from="{net.segment_ids[origin[i]]}" '
            f'to="{net.segment_ids[dest[i]]}" departLane="best"/>'
        )
    lines.append("</routes>")
    params["trips"] = n_trips
    return "\n".join(lines) + "\n", incidents, params


# ---------------------------------------------------------------------------------------------------------
# One simulated day


def _additional_xml(cfg: TrafficScenarioConfig, net: Network, incidents: list[dict]) -> str:
    b, e = cfg.begin_h * 3600, cfg.end_h * 3600
    lines = [
        "<additional>",
        (
            f'    <edgeData id="speeds" file="edgedata.xml" period="{cfg.interval_s:g}" begin="{b:g}" '
            f'end="{e:g}" excludeEmpty="true" writeAttributes="speed sampledSeconds"/>'
        ),
    ]
    lanes = dict(zip(net.segment_ids, net.lanes))
    for k, inc in enumerate(incidents):
        seg = inc["segment"]
        lane_ids = " ".join(f"{seg}_{i}" for i in range(lanes[seg]))
        lines += [
            f'    <variableSpeedSign id="incident{k}" lanes="{lane_ids}">',
            f'        <step time="{inc["begin"]}" speed="{cfg.incident_speed:g}"/>',
            f'        <step time="{inc["end"]}" speed="-1"/>',
            "    </variableSpeedSign>",
        ]
    lines.append("</additional>")
    return "\n".join(lines) + "\n"


def sumo_command(cfg: TrafficScenarioConfig, sumo_seed: int) -> list[str]:
    """Return the sumo command line of one day (relative file names, run in the day's directory)."""
    if cfg.junction_model == "control":
        junctions = ["--meso-junction-control", "true"]
    else:
        junctions = ["--meso-tls-penalty", "1", "--meso-tls-flow-penalty", "1"]
        junctions += ["--meso-minor-penalty", f"{cfg.minor_penalty_s:g}"]
    # fmt: off
    return [
        "sumo", "-n", "net.net.xml", "-r", "trips.xml", "-a", "additional.xml",
        "--mesosim", "true", *junctions,
        "--begin", f"{cfg.begin_h * 3600:g}", "--end", f"{cfg.end_h * 3600 + cfg.drain_s:g}",
        "--seed", str(sumo_seed),
        "--device.rerouting.probability", f"{cfg.rerouting_share:g}", "--device.rerouting.period", "300",
        "--vehroute-output", "vehroutes.xml", "--vehroute-output.exit-times", "true",
        "--vehroute-output.last-route", "true", "--statistic-output", "statistics.xml",
        "--max-depart-delay", "900", "--duration-log.statistics", "true",
        "--ignore-route-errors", "true", "--no-step-log", "true", "--no-warnings", "true",
    ]
    # fmt: on


def _read_edgedata(path: Path, net: Network, cfg: TrafficScenarioConfig) -> tuple[np.ndarray, np.ndarray]:
    index = {s: i for i, s in enumerate(net.segment_ids)}
    speed = np.zeros((cfg.num_steps, net.num_segments, 1), np.float32)
    mask = np.zeros((cfg.num_steps, net.num_segments, 1), bool)
    t0 = cfg.begin_h * 3600
    for _, el in ET.iterparse(path, events=("end",)):
        if el.tag != "interval":
            continue
        k = int(round((float(el.get("begin")) - t0) / cfg.interval_s))
        if 0 <= k < cfg.num_steps:
            for e in el.iter("edge"):
                i = index.get(e.get("id"))
                v = e.get("speed")
                if i is not None and v is not None and float(e.get("sampledSeconds", 0)) > 0:
                    speed[k, i, 0] = float(v)
                    mask[k, i, 0] = True
        el.clear()
    return speed, mask


def _read_vehroutes(path: Path, net: Network) -> tuple[list[np.ndarray], list[np.ndarray]]:
    index = {s: i for i, s in enumerate(net.segment_ids)}
    routes, exits = [], []
    for _, el in ET.iterparse(path, events=("end",)):
        if el.tag != "vehicle":
            continue
        r = el.find("route")
        if r is not None and r.get("exitTimes"):
            edges = r.get("edges").split()
            ex = np.array(r.get("exitTimes").split(), dtype=np.float64)
            if len(edges) == len(ex) and all(e in index for e in edges):
                routes.append(np.array([index[e] for e in edges], np.int32))
                exits.append(ex)
        el.clear()
    return routes, exits


def entry_speeds(
    routes: list[np.ndarray], exits: list[np.ndarray], net: Network, cfg: TrafficScenarioConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Return `[T, N, 1]` speeds (and mask) as length / mean traversal time, by the interval of entry.

    Only whole traversals count (not a trip's first and last segment); a traversal faster than half the
    free-flow time (a teleport) is dropped.
    """
    seg, t_in, tau = [], [], []
    for r, ex in zip(routes, exits):
        if len(r) >= 3:
            seg.append(r[1:-1])
            t_in.append(ex[:-2])
            tau.append(np.diff(ex)[:-1])
    t, n = cfg.num_steps, net.num_segments
    speed = np.zeros((t, n, 1), np.float32)
    mask = np.zeros((t, n, 1), bool)
    if not seg:
        return speed, mask
    seg, t_in, tau = (np.concatenate(a) for a in (seg, t_in, tau))
    k = np.floor((t_in - cfg.begin_h * 3600) / cfg.interval_s).astype(np.int64)
    ok = (k >= 0) & (k < t) & (tau >= 0.5 * net.length[seg] / net.speed_limit[seg])
    total = np.zeros((t, n))
    count = np.zeros((t, n))
    np.add.at(total, (k[ok], seg[ok]), np.maximum(tau[ok], 1.0))
    np.add.at(count, (k[ok], seg[ok]), 1)
    seen = count > 0
    speed[seen, 0] = (net.length[None, :] * count / np.maximum(total, 1e-9))[seen]
    mask[seen, 0] = True
    return speed, mask


def _read_statistics(path: Path) -> dict:
    root = ET.parse(path).getroot()
    out = {}
    for tag, keys in (
        ("vehicles", ("loaded", "inserted", "running", "waiting")),
        ("teleports", ("total",)),
        ("vehicleTripStatistics", ("count", "routeLength", "duration", "waitingTime", "timeLoss")),
    ):
        el = root.find(tag)
        if el is not None:
            for k in keys:
                if el.get(k) is not None:
                    out[f"{tag}.{k}"] = float(el.get(k))
    return out


def simulate_day(
    cfg: TrafficScenarioConfig, net_file: str | os.PathLike, day: int, seed: int, keep_dir: str | None = None
) -> dict:
    """Simulate one day; return its speed trajectory, ETA labels and run record.

    Args:
        cfg: the scenario.
        net_file: the network built by ``build_network`` (shared by all days).
        day: day index (sets the day of week).
        seed: this day's seed (demand, incidents, SUMO's own RNG, label windows).
        keep_dir: if given, the SUMO input/output files are kept there.

    Returns:
        ``{"trajectory": fields of SPEED_SCHEMA, "routes": RouteSet, "record": dict}``.
    """
    net = read_network(net_file)
    dow = (cfg.start_day_of_week + day) % 7
    rng_demand, rng_labels = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    trips, incidents, params = make_demand(cfg, net, dow, rng_demand)
    tmp = tempfile.mkdtemp(prefix=f"gnnsim_sumo_day{day}_") if keep_dir is None else keep_dir
    work = Path(tmp)
    work.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copy(net_file, work / "net.net.xml")
        (work / "trips.xml").write_text(trips)
        (work / "additional.xml").write_text(_additional_xml(cfg, net, incidents))
        tic = time.perf_counter()
        cmd = _run(sumo_command(cfg, seed % 2**31), work)
        wall = time.perf_counter() - tic
        speed, mask = _read_edgedata(work / "edgedata.xml", net, cfg)
        v_routes, v_exits = _read_vehroutes(work / "vehroutes.xml", net)
        stats = _read_statistics(work / "statistics.xml")
    finally:
        if keep_dir is None:
            shutil.rmtree(tmp, ignore_errors=True)
    r, e, d = sample_label_windows(
        rng_labels, v_routes, v_exits, cfg.route_min_segments, cfg.route_max_segments
    )
    labels = make_route_set(r, e, d)
    e_speed, e_mask = entry_speeds(v_routes, v_exits, net, cfg)
    # Drop labels that a teleport shortened: no segment can be crossed in under half its free-flow time.
    seg_time = np.diff(labels.segment_exit, prepend=0.0)  # per segment; each route's first is fixed below
    seg_time[labels.route_start] = labels.segment_exit[labels.route_start] - labels.depart
    too_fast = seg_time < 0.5 * net.length[labels.route_segments] / net.speed_limit[labels.route_segments]
    bad = np.add.reduceat(too_fast, labels.route_start) > 0 if len(labels) else np.zeros(0, bool)
    labels = labels.subset(~bad)
    t = cfg.num_steps
    tod = ((cfg.begin_h * 3600 + np.arange(t) * cfg.interval_s) / DAY_S).astype(np.float32)
    traj = {
        "speed": speed,
        "mask": mask,
        "entry_speed": e_speed,
        "entry_mask": e_mask,
        "time_of_day": tod,
        "day_of_week": np.full(t, dow, np.int32),
        **net.static_fields(),
    }
    record = {
        "day": day,
        "day_of_week": dow,
        "seed": seed,
        "sumo_seed": seed % 2**31,
        "command": cmd,
        "sumo_wall_s": round(wall, 3),
        "demand": params,
        "incidents": incidents,
        "statistics": stats,
        "vehicles_with_exit_times": len(v_routes),
        "labels": len(labels),
        "labels_dropped_teleport": int(bad.sum()),
        "observed_share": float(mask.mean()),
    }
    return {"trajectory": traj, "routes": labels, "record": record}


def _simulate_day_star(args) -> dict:
    return simulate_day(*args)


# ---------------------------------------------------------------------------------------------------------
# Whole scenario


def generate(out_dir: str | os.PathLike, cfg: TrafficScenarioConfig, seed: int, workers: int = 1) -> dict:
    """Build the network, simulate every day and write the dataset (see the module docstring for the layout).

    Days are consecutive (day 0 is ``cfg.start_day_of_week``): the first ``train_days`` form the train split,
    then valid, then test. Everything follows from ``seed``: the network from one derived seed, each day from
    its own.

    Args:
        out_dir: dataset directory (created; existing split files are replaced).
        cfg: the scenario.
        seed: master seed.
        workers: processes that simulate days in parallel.

    Returns:
        The scenario record also written to ``scenario.json`` (config, seeds, commands, per-day statistics).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = trajectory_seeds(seed, 1 + cfg.num_days)
    tic = time.perf_counter()
    net, net_cmds = build_network(cfg, seeds[0], out / "network")
    net_file = out / "network" / "net.net.xml"
    jobs = [(cfg, str(net_file), d, seeds[1 + d]) for d in range(cfg.num_days)]
    if workers <= 1:
        days = [_simulate_day_star(j) for j in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            days = list(pool.map(_simulate_day_star, jobs))
    record = {
        "generator": "gnnsim.traffic.sumo",
        "sumo_version": sumo_version(),
        "sumo_pin": SUMO_PIN,
        "seed": seed,
        "config": asdict(cfg),
        "network": {
            "seed": seeds[0],
            "commands": net_cmds,
            "segments": net.num_segments,
            "edges": len(net.senders),
            "segment_ids": net.segment_ids,
        },
        "sumo_command_template": " ".join(sumo_command(cfg, 0)).replace("--seed 0", "--seed {sumo_seed}"),
        "days": [d["record"] for d in days],
        "units": {"speed": "m/s", "length": "m", "time": "s since midnight", "interval_s": cfg.interval_s},
    }
    bounds = np.cumsum([0, cfg.train_days, cfg.valid_days, cfg.test_days])
    for name, a, b in zip(("train", "valid", "test"), bounds[:-1], bounds[1:]):
        if b == a:
            continue
        split_cfg = {**record, "split": name, "days_in_split": list(range(int(a), int(b)))}
        write_split(
            out / f"{name}.h5",
            (days[i]["trajectory"] for i in range(a, b)),
            SPEED_SCHEMA,
            dt=cfg.interval_s,
            generator="gnnsim.traffic.sumo",
            config=split_cfg,
        )
        write_routes(
            out / "routes" / f"{name}.h5",
            [days[i]["routes"] for i in range(a, b)],
            config=split_cfg,
            dt=cfg.interval_s,
        )
    record["generate_wall_s"] = round(time.perf_counter() - tic, 2)
    write_text_atomic(out / "scenario.json", json.dumps(record, indent=1, default=str))
    return record
