"""Writes tests/data/ppi_reference.json: prediction-powered means computed by the authors' package,
ppi_py 0.2.3 (pip install ppi-python==0.2.3), for tests/test_calibration.py to compare with
`selfinstruct.calibration.ppi_mean`.

ppi_py is not a dependency of this project (its wheel installs a top-level `tests` package that
would shadow ours, and pulls numba, scikit-learn and statsmodels). Run this script in a venv of
its own, from the repository root:

    python3 -m venv /tmp/ppivenv && /tmp/ppivenv/bin/pip install ppi-python==0.2.3
    /tmp/ppivenv/bin/python tests/data/make_ppi_fixture.py

ppi_py's degrees of freedom: the interval's two standard deviations divide by n (ddof 0);
lambda's covariance divides by n (ddof 0) and the judge's variance, np.cov, by n - 1 (ddof 1);
lambda is clipped to [0, 1]; the point estimate is not clipped.
"""
import json
from pathlib import Path

import numpy as np
import ppi_py
from ppi_py.ppi import _calc_lam_glm

ALPHA = 0.05


def case(name, y, f_small, f_big):
    y, f_small, f_big = (np.asarray(a, dtype=float) for a in (y, f_small, f_big))
    classic = ppi_py.ppi_mean_ci(y, f_small, f_big, alpha=ALPHA, lam=1)
    est1 = ppi_py.ppi_mean_pointestimate(y, f_small, f_big, lam=1)
    grads, hat, hat_big = (y - est1), (f_small - est1), (f_big - est1)
    lam_raw = _calc_lam_glm(grads, hat, hat_big, np.eye(1), clip=False)
    lam = _calc_lam_glm(grads, hat, hat_big, np.eye(1), clip=True)
    tuned = ppi_py.ppi_mean_ci(y, f_small, f_big, alpha=ALPHA)
    return {"name": name, "human": y.tolist(), "judge_labeled": f_small.tolist(), "judge_unlabeled": f_big.tolist(),
            "ppi_estimate": float(np.ravel(est1)[0]),
            "ppi_low": float(np.ravel(classic[0])[0]), "ppi_high": float(np.ravel(classic[1])[0]),
            "lam_unclipped": float(lam_raw), "lam": float(lam),
            "ppipp_estimate": float(np.ravel(ppi_py.ppi_mean_pointestimate(y, f_small, f_big))[0]),
            "ppipp_low": float(np.ravel(tuned[0])[0]), "ppipp_high": float(np.ravel(tuned[1])[0])}


def binary(rng, n, big, rate, catches_no, false_no):
    y = rng.random(n) < rate
    u = rng.random(n)
    f = np.where(y, u >= false_no, u >= catches_no)
    judge_rate = rate * (1 - false_no) + (1 - rate) * (1 - catches_no)
    return y, f, rng.random(big) < judge_rate


def main() -> None:
    rng = np.random.default_rng(23)
    cases = [case("hand: 3 labeled, 4 unlabeled", [1, 0, 0], [1, 0, 1], [1, 1, 0, 1])]
    for n, big, rate, judge in ((30, 2000, 0.58, (0.9, 0.1)), (200, 5000, 0.6, (0.75, 0.1)),
                                (50, 3000, 0.92, (0.95, 0.15)), (100, 4000, 0.05, (0.5, 0.01))):
        cases.append(case(f"binary: n {n}, N {big}, rate {rate}, judge {judge}", *binary(rng, n, big, rate, *judge)))
    # 28 yes and 2 no among 30 labels whose verdicts all say yes, 2% "no" in the pool: lambda clips to 1
    cases.append(case("binary: lambda above 1, clipped", [1] * 28 + [0] * 2, [1] * 29 + [0], [1] * 980 + [0] * 20))
    # a judge whose verdicts go against people: lambda clips to 0
    cases.append(case("binary: lambda below 0, clipped", [1, 1, 0, 0, 1, 0, 1, 0], [0, 0, 1, 1, 0, 1, 1, 0],
                      [1, 0] * 50))
    y = rng.normal(3.0, 1.0, 80)
    cases.append(case("continuous: scores", y, y + rng.normal(0.3, 0.5, 80), rng.normal(3.3, 1.1, 1500)))
    out = {"ppi_py": ppi_py.__version__ if hasattr(ppi_py, "__version__") else "0.2.3", "alpha": ALPHA,
           "ddof": "interval sd and lambda covariance: 0; lambda's variance (np.cov): 1", "cases": cases}
    path = Path(__file__).with_name("ppi_reference.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {path}")


if __name__ == "__main__":
    main()
