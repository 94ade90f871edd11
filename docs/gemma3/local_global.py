"""The Gemma 3 table of docs/gemma3/README.md: an `mvjax analyze` result split into local
(sliding-window) and global layers, per site. Usage: python docs/gemma3/local_global.py results/gemma3"""

import json
import sys

import numpy as np


def split(res: dict) -> list[dict]:
    kinds = ["local" if w else "global" for w in res["model"]["config"]["sliding_window"]]
    rows = []
    for site, layers in res["sites"].items():
        for kind in ("local", "global"):
            ls = [m for m in layers if kinds[m["layer"]] == kind]
            rot = sum(m["n_massive_rotating"] for m in ls)
            wl = [w for m in ls for w in m["top_dim_wavelengths"] if w is not None]
            rows.append({
                "site": site, "layers": kind, "n": len(ls),
                "massive": sum(m["n_massive"] for m in ls),
                "layers_with": sum(m["n_massive"] > 0 for m in ls),
                "median_max_mean": float(np.median([m["max_mean_ratio_median"] for m in ls])),
                "low_freq_share": sum(m["n_massive_low_freq"] for m in ls) / rot if rot else None,
                "top_dim_wavelength_median": float(np.median(wl)) if wl else None,
                "top_dims_beyond_512": float(np.mean([w > 512 for w in wl])) if wl else None})
    return rows


if __name__ == "__main__":
    with open(sys.argv[1] + "/massive_values.json") as f:
        print(json.dumps(split(json.load(f)), indent=1))
