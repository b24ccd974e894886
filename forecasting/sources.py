"""Where series come from: long-format tables, the real series bundled with statsmodels, and AR(p) generators.

Every source yields one long-format DataFrame with columns ``unique_id``,
``ds`` (integer step or timestamp) and ``y``, which
:func:`tsuite.forecasting.validation.validate_series` then checks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tsuite.tables import InputError, read_table

STATSMODELS_SERIES = ("sunspots", "nile", "co2", "elnino", "macrodata")


@dataclass
class ARProcess:
    """A stationary AR(p) process y_t = Σ_k coefficients[k-1]·y_{t-k} + ε_t, ε_t ~ N(0, noise²).

    ``n_series`` independent series of ``length`` points (after ``burn_in``
    discarded steps), reproducible from ``seed``.
    """

    coefficients: list[float] = field(default_factory=lambda: [0.2, 0.3, -0.5])
    noise: float = 1.0
    length: int = 1000
    n_series: int = 1
    seed: int = 0
    burn_in: int = 500

    def __post_init__(self) -> None:
        if not self.coefficients:
            raise InputError("ar.coefficients: empty; expected at least one AR coefficient")
        roots = np.roots(np.r_[1.0, -np.asarray(self.coefficients, dtype=float)])
        if np.any(np.abs(roots) >= 1.0):
            raise InputError(
                f"ar.coefficients {self.coefficients}: the process is not stationary (a root of the AR polynomial "
                f"has modulus {np.abs(roots).max():.3f} ≥ 1); expected all roots inside the unit circle"
            )
        if self.length < 1 or self.n_series < 1:
            raise InputError(f"ar: length and n_series must be positive, got {self.length} and {self.n_series}")

    def generate(self) -> pd.DataFrame:
        rng = np.random.default_rng(self.seed)
        p = len(self.coefficients)
        phi = np.asarray(self.coefficients, dtype=np.float64)[::-1]  # phi[j] multiplies y_{t-p+j}
        total = self.length + self.burn_in
        eps = rng.normal(0.0, self.noise, size=(self.n_series, total))
        y = np.zeros((self.n_series, total + p))
        for t in range(total):
            y[:, p + t] = y[:, t : t + p] @ phi + eps[:, t]
        y = y[:, p + self.burn_in :]
        ids = np.repeat([f"ar{i}" for i in range(self.n_series)], self.length)
        ds = np.tile(np.arange(self.length), self.n_series)
        return pd.DataFrame({"unique_id": ids, "ds": ds, "y": y.reshape(-1)})


def statsmodels_series(spec: str) -> pd.DataFrame:
    """A real series bundled with statsmodels, in long format.

    ``spec`` is ``NAME`` or ``NAME:COL1,COL2`` (macrodata columns), NAME one of
    sunspots (yearly), nile (yearly), co2 (weekly, with gaps to fill), elnino
    (monthly) and macrodata (quarterly; every column is a series).
    """
    import statsmodels.api as sm

    name, _, cols = spec.partition(":")
    if name not in STATSMODELS_SERIES:
        raise InputError(f"statsmodels:{spec}: unknown series {name!r}; expected one of {', '.join(STATSMODELS_SERIES)}")
    data = getattr(sm.datasets, name).load_pandas().data
    if name == "sunspots":
        out = pd.DataFrame({"unique_id": "sunspots", "ds": data["YEAR"].astype(int), "y": data["SUNACTIVITY"]})
    elif name == "nile":
        out = pd.DataFrame({"unique_id": "nile", "ds": data["year"].astype(int), "y": data["volume"]})
    elif name == "co2":
        out = pd.DataFrame({"unique_id": "co2", "ds": data.index, "y": data["co2"].to_numpy()})
    elif name == "elnino":
        months = [c for c in data.columns if c != "YEAR"]
        long = data.melt(id_vars="YEAR", value_vars=months, var_name="month", value_name="y")
        long["ds"] = pd.to_datetime(
            long["YEAR"].astype(int).astype(str) + "-" + long["month"].map(lambda m: months.index(m) + 1).astype(str)
            + "-01"
        )
        out = long.assign(unique_id="elnino")[["unique_id", "ds", "y"]].sort_values("ds")
    else:  # macrodata: quarterly, one series per column
        values = [c for c in data.columns if c not in ("year", "quarter")]
        chosen = [c.strip() for c in cols.split(",")] if cols else values
        unknown = sorted(set(chosen) - set(values))
        if unknown:
            raise InputError(f"statsmodels:{spec}: unknown macrodata column(s) {unknown}; expected some of {values}")
        ds = pd.PeriodIndex.from_fields(
            year=data["year"].astype(int), quarter=data["quarter"].astype(int), freq="Q"
        ).to_timestamp()
        out = pd.concat(
            [pd.DataFrame({"unique_id": c, "ds": ds, "y": data[c].to_numpy()}) for c in chosen], ignore_index=True
        )
    return out.reset_index(drop=True)


def load_series(source: str, ar: ARProcess | None = None) -> tuple[pd.DataFrame, str]:
    """Load ``source`` as a long-format table; return it with a name to use in error messages.

    ``source`` is a CSV/Parquet path, ``statsmodels:NAME[:COLS]`` or ``ar`` (the
    ``ar`` process, default AR(3) coefficients [0.2, 0.3, -0.5] when None).
    """
    if source.startswith("statsmodels:"):
        return statsmodels_series(source.split(":", 1)[1]), source
    if source in ("ar", "ar:"):
        return (ar or ARProcess()).generate(), "ar"
    return read_table(source), source
