"""Regenerate the regression fixtures of the lenalidomide-CLL model (tests/test_regression.py).

Run from the repository root, only on purpose, when the model itself changes:

    python tests/data/make_regression.py
"""

import numpy as np

import lenapk
from lenapk.calibration import Objective
from lenapk.models.cll import label_rule, load_observations

out = {}
model = lenapk.LenalidomideCLL()
typ = model.default_params()
regs = lenapk.load_regimens()
rel = typ.replace(relapsed=1.0, anc0=2.2, plt0=110.0, alc0=60.0, crcl=55.0, ffm=48.0)
reg6 = lenapk.Regimen.from_daily_doses(np.asarray(regs["rr_10_to_25_cont"].doses)[:168], name="rr6")
for key, rules in (("sim_plain", None), ("sim_label", label_rule())):
    df = lenapk.simulate(reg6, rel, rules=rules)
    for c in df.columns:
        out[f"{key}/{c}"] = df[c].to_numpy(float)
early = lenapk.Regimen.from_daily_doses(np.asarray(regs["early_2p5_then_5_cont"].doses)[:56], name="e2")
df = lenapk.simulate(early, typ, times=[0.0, 0.1, 0.25, 1.0, 3.5, 10.04, 27.9, 40.0, 56.0])
for c in df.columns:
    out[f"sim_times/{c}"] = df[c].to_numpy(float)
reg2 = lenapk.Regimen.cycles(10, n_cycles=2, escalation_mg=5, escalate_every_days=28, max_mg=15, name="t2")
coh = lenapk.cohort(reg2, n=12, seed=3, setting="relapsed", rules=label_rule(), block_size=8, progress=False)
coh.to_parquet("tests/data/regression_cohort.parquet")
obj = Objective(load_observations(), n_patients=8, seed=0)
obj, _ = obj.freeze_doses(obj.x0)
v, g = obj.value_and_grad(obj.x0)
out["objective/value"] = np.array([v])
out["objective/grad"] = np.asarray(g)
out["objective/free"] = np.array(obj.free)
t, _ = obj.table_at(obj.x0)
out["objective/predicted"] = t["predicted"].to_numpy(float)
out["objective/predicted_smooth"] = t["predicted_smooth"].to_numpy(float)
b = lenapk.Regimen.cycles(5, n_cycles=2, days_on=21, name="b")
cmp = lenapk.compare({"a": reg2, "b": b}, n=8, seed=1, rules=label_rule(), setting="relapsed")
cmp.to_parquet("tests/data/regression_compare.parquet")
np.savez_compressed("tests/data/regression_cll.npz", **out)
print("ok", len(out))
