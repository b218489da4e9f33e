"""NONMEM data sets in: the public reference data sets load with the counts their raw files give,
the event semantics (ADDL, infusions, resets, steady state, DVID, rxode2 codes) on small
hand-written tables, padding, and every validation error naming row, field and value."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import lenapk  # noqa: F401  (float64 on)
from lenapk.calibration import DatasetError
from lenapk.estimation._dataset import NonmemData, read_nonmem

DATA = Path(__file__).parent / "data" / "nonmem"


def _np(data: NonmemData) -> dict:
    """The subjects' arrays as numpy."""
    s = data.subjects
    names = [n for n in vars(s) if n not in ("covariates", "ids")]
    return {n: np.asarray(getattr(s, n)) for n in names}


# ------------------------------------------------------------------------- reference data sets
def test_theo_sd_matches_theoph():
    """theo_sd (EVID 101 doses) against R's Theoph: dose = Dose (mg/kg) * Wt, and the
    concentrations with their times, subject by subject."""
    data = read_nonmem(DATA / "nlmixr2data_theo_sd.csv", covariates=("wt",))
    theoph = pd.read_csv(DATA / "Theoph.csv")
    a = _np(data)
    assert data.source == "nlmixr2data_theo_sd.csv"
    assert data.n_subjects == 12 and data.n_observations == 132 == len(theoph)
    assert data.outputs == ("DV",) and data.covariates == ("WT",)
    assert set(data.table["EVID"]) == {0.0, 1.0}  # 101 read as a dose into compartment 1
    assert a["dose_amt"].shape == (12, 1) and (a["dose_cmt"] == 1).all() and (a["obs_cmt"] == 2).all()
    for s, sid in enumerate(data.subjects.ids):
        t = theoph[theoph["Subject"] == sid]
        assert a["dose_amt"][s, 0] == pytest.approx(t["Dose"].iloc[0] * t["Wt"].iloc[0], abs=1e-6)
        mask = a["obs_mask"][s]
        np.testing.assert_array_equal(a["obs_time"][s][mask], t["Time"].to_numpy())
        np.testing.assert_array_equal(a["dv"][s][mask], t["conc"].to_numpy())
        assert float(data.subjects.covariates["WT"][s]) == t["Wt"].iloc[0]
    assert data.subjects.ids == tuple(range(1, 13))


def test_pheno_whitespace_file():
    """pheno.dta: whitespace-separated, no EVID/MDV columns (EVID from AMT), two covariates."""
    raw = pd.read_csv(DATA / "pheno.dta", sep=r"\s+")
    data = read_nonmem(DATA / "pheno.dta", covariates=("WGT", "APGR"))
    a = _np(data)
    assert data.n_subjects == 59 == raw["ID"].nunique()
    assert data.n_observations == 155 == int((raw["DV"] > 0).sum())
    n_doses = int((raw["AMT"] > 0).sum())
    assert int((a["dose_amt"] > 0).sum()) == n_doses == int((data.table["EVID"] == 1).sum())
    assert a["dose_amt"].sum() == pytest.approx(raw["AMT"].sum(), rel=1e-12)
    first = raw.groupby("ID", sort=False).first()
    np.testing.assert_array_equal(np.asarray(data.subjects.covariates["WGT"]), first["WGT"].to_numpy())
    np.testing.assert_array_equal(np.asarray(data.subjects.covariates["APGR"]), first["APGR"].to_numpy())
    assert (a["dose_epoch"][a["dose_amt"] > 0] == 0).all() and (a["obs_epoch"][a["obs_mask"]] == 0).all()


def test_warfarin_concentrations_only():
    """Lower-case columns; IGNORE on a text column keeps the source row numbers."""
    raw = pd.read_csv(DATA / "nlmixr2data_warfarin.csv")
    data = read_nonmem(DATA / "nlmixr2data_warfarin.csv", ignore="DVID == 'pca'", covariates=("WT", "AGE"))
    kept = raw[raw["dvid"] != "pca"]
    assert data.n_subjects == 32
    assert data.n_observations == int((kept["evid"] == 0).sum()) == 251
    assert data.outputs == ("cp",)
    np.testing.assert_array_equal(data.table["ROW"].to_numpy(), kept.index.to_numpy())
    assert list(data.table.columns[:9]) == ["ID", "TIME", "AMT", "DV", "DVID", "EVID", "WT", "AGE", "SEX"]
    a = _np(data)
    assert int((a["dose_amt"] > 0).sum()) == int((raw["evid"] == 1).sum())


def test_warfarin_two_outputs():
    raw = pd.read_csv(DATA / "nlmixr2data_warfarin.csv")
    data = read_nonmem(DATA / "nlmixr2data_warfarin.csv")
    a = _np(data)
    obs = raw[raw["evid"] == 0]
    assert data.outputs == ("cp", "pca") and data.n_observations == len(obs)
    out = a["obs_output"][a["obs_mask"]]
    assert (out == 0).sum() == (obs["dvid"] == "cp").sum() and (out == 1).sum() == (obs["dvid"] == "pca").sum()
    # obs_row indexes the table by position
    rows = a["obs_row"][a["obs_mask"]]
    np.testing.assert_array_equal(data.table["DVID"].to_numpy()[rows], obs["dvid"].to_numpy())


def test_wang2007_no_doses():
    """Only ID, Time, Y: with Y renamed DV every record is an observation; one padded dose column."""
    data = read_nonmem(DATA / "nlmixr2data_Wang2007.csv", rename={"Y": "DV"})
    a = _np(data)
    assert data.n_subjects == 10 and data.n_observations == 20
    assert a["dose_amt"].shape == (10, 1) and (a["dose_amt"] == 0).all() and (a["dose_epoch"] == -1).all()
    np.testing.assert_array_equal(a["dv"].ravel(), pd.read_csv(DATA / "nlmixr2data_Wang2007.csv")["Y"].to_numpy())


def test_bolus_1cpt_single_dose_part():
    raw = pd.read_csv(DATA / "nlmixr2data_Bolus_1CPT.csv")
    sd = raw[raw["SD"] == 1]
    data = read_nonmem(DATA / "nlmixr2data_Bolus_1CPT.csv", drop=("SS",), ignore="SD == 0")
    assert data.n_subjects == 120 == sd["ID"].nunique()
    assert data.n_observations == int(((sd["EVID"] == 0) & (sd["MDV"] == 0)).sum())
    assert "SS" not in data.table and len(data.table) == len(sd)
    a = _np(data)
    assert int((a["dose_amt"] > 0).sum()) == int((sd["EVID"] == 1).sum())
    with pytest.raises(DatasetError, match=r"row 0 \(line 2\), field 'SS'.*got 99"):
        read_nonmem(DATA / "nlmixr2data_Bolus_1CPT.csv", ignore="SD == 0")


# ------------------------------------------------------------------------------ event semantics
def _frame(rows, columns="ID TIME AMT DV EVID MDV"):
    return pd.DataFrame(rows, columns=columns.split())


def test_addl_expanded_and_sorted_with_infusion_durations():
    """ADDL doses at TIME + j*II, merged in time order with a later record (stable); infusion
    duration AMT/RATE, bolus 0."""
    df = _frame(
        [
            [1, 0, 100, 0, 1, 1, 50, 2, 10],
            [1, 5, 0, 3.0, 0, 0, 0, 0, 0],
            [1, 15, 40, 0, 1, 1, 0, 0, 0],
            [1, 30, 0, 2.0, 0, 0, 0, 0, 0],
        ],
        "ID TIME AMT DV EVID MDV RATE ADDL II",
    )
    a = _np(read_nonmem(df))
    np.testing.assert_array_equal(a["dose_time"][0], [0, 10, 15, 20])
    np.testing.assert_array_equal(a["dose_amt"][0], [100, 100, 40, 100])
    np.testing.assert_array_equal(a["dose_duration"][0], [2, 2, 0, 2])
    assert not a["dose_ss"].any() and (a["dose_ii"] == 0).all() and (a["dose_epoch"] == 0).all()


def test_epochs_of_resets():
    """EVID 3 and 4 start an epoch at their record: an observation at the same time on an earlier
    row keeps the old epoch, one on a later row gets the new one; ADDL doses at/after the reset
    are dropped."""
    df = _frame(
        [
            [1, 0, 100, 0, 1, 1, 3, 12],  # doses 0, 12 (24 and 36 fall at/after the reset at 24)
            [1, 6, 0, 1.0, 0, 0, 0, 0],
            [1, 24, 0, 1.1, 0, 0, 0, 0],  # same time, earlier row: epoch 0
            [1, 24, 0, 0, 3, 1, 0, 0],  # reset -> epoch 1
            [1, 24, 0, 1.2, 0, 0, 0, 0],  # epoch 1
            [1, 30, 50, 0, 4, 1, 0, 0],  # reset and dose -> epoch 2
            [1, 31, 0, 1.3, 0, 0, 0, 0],
        ],
        "ID TIME AMT DV EVID MDV ADDL II",
    )
    data = read_nonmem(df)
    a = _np(data)
    np.testing.assert_array_equal(a["dose_time"][0], [0, 12, 30])
    np.testing.assert_array_equal(a["dose_epoch"][0], [0, 0, 2])
    np.testing.assert_array_equal(a["obs_epoch"][0], [0, 0, 1, 2])
    np.testing.assert_array_equal(a["obs_row"][0], [1, 2, 4, 6])
    assert data.n_observations == 4


def test_steady_state_dose_is_a_reset():
    df = _frame(
        [
            [1, 0, 100, 0, 1, 1, 0, 0, 0],
            [1, 10, 0, 2.0, 0, 0, 0, 0, 0],
            [1, 48, 80, 0, 1, 1, 1, 24, 1],  # SS=1, II=24, one additional dose at 72
            [1, 50, 0, 3.0, 0, 0, 0, 0, 0],
        ],
        "ID TIME AMT DV EVID MDV SS II ADDL",
    )
    a = _np(read_nonmem(df))
    np.testing.assert_array_equal(a["dose_time"][0], [0, 48, 72])
    np.testing.assert_array_equal(a["dose_ss"][0], [False, True, False])
    np.testing.assert_array_equal(a["dose_ii"][0], [0, 24, 0])
    np.testing.assert_array_equal(a["dose_epoch"][0], [0, 1, 1])
    np.testing.assert_array_equal(a["obs_epoch"][0], [0, 1])


def test_dvid_numbers_in_order_of_first_appearance():
    df = _frame(
        [[1, 0, 10, 0, 1, 1, 1], [1, 1, 0, 5, 0, 0, 2], [1, 2, 0, 4, 0, 0, 1], [2, 1, 0, 3, 0, 0, 2]],
        "ID TIME AMT DV EVID MDV DVID",
    )
    data = read_nonmem(df)
    a = _np(data)
    assert data.outputs == (2, 1)  # the dose record's DVID 1 does not count
    np.testing.assert_array_equal(a["obs_output"], [[0, 1], [0, 0]])


def test_rxode2_classic_evid_and_defaults():
    """EVID 201 is a bolus into compartment 2; without EVID/MDV/CMT columns NONMEM's defaults;
    "." is missing; lower-case names; rename then drop by source name."""
    df = _frame([[1, 0, 10, 0, 201, 1], [1, 1, 0, 5, 0, 0]])
    a = _np(read_nonmem(df))
    assert a["dose_cmt"][0, 0] == 2 and a["obs_cmt"][0, 0] == 1
    df = pd.DataFrame(
        {"subj": ["a", "a", "b", "b"], "time": [0, 1, 0, 2], "amt": ["10", ".", 20, 0], "dv": [".", 3, 0, 4]}
    )
    data = read_nonmem(df.assign(junk=1), rename={"SUBJ": "ID"}, drop=("junk",))
    a = _np(data)
    assert data.subjects.ids == ("a", "b") and data.source == "<DataFrame>"
    np.testing.assert_array_equal(data.table["EVID"], [1, 0, 1, 0])
    np.testing.assert_array_equal(data.table["MDV"], [1, 0, 1, 0])
    np.testing.assert_array_equal(a["dose_amt"], [[10], [20]])
    np.testing.assert_array_equal(a["dv"], [[3], [4]])
    assert list(data.table.columns) == ["ID", "TIME", "AMT", "DV", "ROW", "EVID", "MDV"]


def test_padding_and_dtypes():
    df = _frame(
        [[1, 0, 10, 0, 1, 1, 70], [1, 1, 0, 5, 0, 0, 70], [1, 2, 0, 4, 0, 0, 70], [2, 3, 0, 6, 0, 0, 80]],
        "ID TIME AMT DV EVID MDV WT",
    )
    data = read_nonmem(df, covariates=("WT",))
    s, a = data.subjects, _np(data)
    assert a["obs_time"].shape == (2, 2) and a["dose_time"].shape == (2, 1)
    np.testing.assert_array_equal(a["obs_mask"], [[True, True], [True, False]])
    assert (a["obs_time"][1, 1], a["dv"][1, 1], a["obs_row"][1, 1], a["obs_epoch"][1, 1]) == (0, 0, -1, -2)
    assert (a["dose_amt"][1, 0], a["dose_epoch"][1, 0], a["dose_ss"][1, 0]) == (0, -1, False)
    assert s.obs_time.dtype == np.float64 and s.dose_amt.dtype == np.float64 and s.obs_mask.dtype == bool
    assert s.dose_ss.dtype == bool and np.issubdtype(s.obs_row.dtype, np.integer)
    assert np.issubdtype(s.dose_epoch.dtype, np.integer) and s.covariates["WT"].dtype == np.float64
    np.testing.assert_array_equal(np.asarray(s.covariates["WT"]), [70, 80])
    assert s.subject(1).obs_time.shape == (2,)


def test_whitespace_file_with_dots(tmp_path):
    path = tmp_path / "run1.dta"
    path.write_text("ID TIME AMT DV\n1 0 10 .\n1 1 . 2.5\n")
    data = read_nonmem(path)
    assert data.source == "run1.dta" and data.n_observations == 1
    assert _np(data)["dose_amt"][0, 0] == 10


# ------------------------------------------------------------------------------------ validation
BASE = [  # ID TIME AMT DV EVID MDV WT
    [1, 0, 100, 0, 1, 1, 70],
    [1, 1, 0, 5, 0, 0, 70],
    [1, 2, 0, 4, 0, 0, 70],
    [2, 0, 100, 0, 1, 1, 80],
    [2, 1, 0, 6, 0, 0, 80],
]


def _base(**columns):
    df = _frame(BASE, "ID TIME AMT DV EVID MDV WT").astype(object)
    for name, value in columns.items():
        df[name] = value
    return df


def _set(df, row, col, value):
    df.loc[row, col] = value
    return df


CASES = {
    "non-numeric TIME": (_set(_base(), 1, "TIME", "1h"), {}, 1, "TIME", "'1h'"),
    "non-numeric covariate": (_set(_base(), 2, "WT", "heavy"), {"covariates": ("WT",)}, 2, "WT", "'heavy'"),
    "missing ID": (_set(_base(), 2, "ID", None), {}, 2, "ID", "missing"),
    "missing TIME": (_set(_base(), 2, "TIME", "."), {}, 2, "TIME", "missing"),
    "negative TIME": (_set(_set(_base(), 3, "TIME", -1), 4, "TIME", -0.5), {}, 3, "TIME", "got -1"),
    "decreasing TIME": (_set(_base(), 2, "TIME", 0.5), {}, 2, "TIME", "got 0.5 after 1"),
    "ID not contiguous": (_set(_base(), 4, "ID", 1), {}, 4, "ID", "contiguous"),
    "unknown EVID": (_set(_base(), 1, "EVID", 5), {}, 1, "EVID", "got 5"),
    "unsupported classic EVID": (_set(_base(), 0, "EVID", 10101), {}, 0, "EVID", "got 10101"),
    "classic EVID against CMT": (_base(EVID=[201, 0, 0, 1, 0], CMT=[1] * 5), {}, 0, "CMT", "compartment 2"),
    "MDV 2": (_set(_base(), 1, "MDV", 2), {}, 1, "MDV", "got 2"),
    "dose without AMT": (_set(_base(), 3, "AMT", "."), {}, 3, "AMT", "got nan"),
    "dose with AMT 0": (_set(_base(), 3, "AMT", 0), {}, 3, "AMT", "got 0"),
    "DV on a dose": (_set(_base(), 0, "DV", 7.5), {}, 0, "DV", "got 7.5"),
    "observation without DV": (_set(_base(), 4, "DV", "."), {}, 4, "DV", "missing on an observation"),
    "CMT 0": (_base(CMT=[1, 0, 1, 1, 1]), {}, 1, "CMT", "got 0"),
    "CMT 1.5": (_base(CMT=[1.5, 1, 1, 1, 1]), {}, 0, "CMT", "got 1.5"),
    "negative RATE": (_base(RATE=[0, 0, 0, -2, 0]), {}, 3, "RATE", "(modelled RATE -1/-2 is not supported), got -2"),
    "ADDL without II": (
        _base(ADDL=[2, 0, 0, 0, 0]),
        {},
        0,
        "ADDL",
        "needs II > 0 (additional doses at intervals II), got II=0",
    ),
    "ADDL not whole": (_base(ADDL=[0, 0, 0, 1.5, 0], II=[0, 0, 0, 12, 0]), {}, 3, "ADDL", "got 1.5"),
    "ADDL on an observation": (_base(ADDL=[0, 1, 0, 0, 0], II=[0, 12, 0, 0, 0]), {}, 1, "ADDL", "not a dose"),
    "SS 2": (_base(SS=[0, 0, 0, 2, 0], II=[0, 0, 0, 24, 0]), {}, 3, "SS", "(SS=2 is not supported), got 2"),
    "SS without II": (
        _base(SS=[1, 0, 0, 0, 0]),
        {},
        0,
        "SS",
        "needs II > 0 (the steady-state dosing interval), got II=0",
    ),
    "negative II": (_base(II=[0, 0, 0, -24, 0]), {}, 3, "II", "got -24"),
    "covariate missing": (_set(_base(), 4, "WT", "."), {"covariates": ("WT",)}, 4, "WT", "missing"),
    "covariate varies": (
        _set(_base(), 2, "WT", 72),
        {"covariates": ("WT",)},
        2,
        "WT",
        "changes within ID 1 (70, then 72); time-varying covariates are not supported",
    ),
    "ID without observation": (_base(MDV=[1, 0, 0, 1, 1]), {}, 3, "DV", "ID 2 has no observation"),
    "DVID missing": (_base(DVID=[1, 1, None, 1, 1]), {}, 2, "DVID", "missing on an observation"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_record_names_row_field_and_value(case):
    df, kwargs, row, field, text = CASES[case]
    with pytest.raises(DatasetError, match=rf"^<DataFrame> row {row}, field '{field}': .*{re.escape(text)}") as e:
        read_nonmem(df, **kwargs)
    assert (e.value.row, e.value.field, e.value.source) == (row, field, "<DataFrame>")


def test_row_numbers_are_source_rows_after_ignore(tmp_path):
    """The row is the source's (before IGNORE) and the file line is row + 2 (header, 1-based)."""
    path = tmp_path / "bad.csv"
    path.write_text("ID,TIME,AMT,DV,FLAG\n1,0,100,0,1\n1,1,0,5,0\n1,2,0,4,0\n1,1.5,0,9,0\n")
    with pytest.raises(DatasetError, match=r"^bad.csv row 3 \(line 5\), field 'TIME': .*got 1.5 after 2"):
        read_nonmem(path)
    with pytest.raises(DatasetError, match=r"^bad.csv row 3 \(line 5\), field 'TIME'"):
        read_nonmem(path, ignore="FLAG == 1")
    assert read_nonmem(path, ignore="TIME == 2").table["ROW"].tolist() == [0, 1, 3]


@pytest.mark.parametrize(
    "kwargs, field, text",
    [
        ({"covariates": ("AGE",)}, "AGE", "is not a column (named as a covariate)"),
        ({"drop": ("SS",)}, "SS", "cannot be dropped"),
        ({"rename": {"Y": "DV"}}, "Y", "cannot be renamed"),
        ({"drop": ("TIME",)}, "TIME", "column is required"),
        ({"rename": {"WT": "DV"}}, "DV", "appears twice"),
    ],
)
def test_bad_columns_name_the_field(kwargs, field, text):
    with pytest.raises(DatasetError, match=rf"^<DataFrame>, field '{field}': .*{re.escape(text)}") as e:
        read_nonmem(_base(), **kwargs)
    assert e.value.row is None and e.value.field == field


def test_bad_ignore_and_empty_and_reserved_row():
    with pytest.raises(DatasetError, match="ignore='NOPE == 1' cannot be evaluated"):
        read_nonmem(_base(), ignore="NOPE == 1")
    with pytest.raises(DatasetError, match="no records left after ignore='TIME >= 0'"):
        read_nonmem(_base(), ignore="TIME >= 0")
    with pytest.raises(DatasetError, match="field 'ROW': is reserved"):
        read_nonmem(_base(row=1))
    with pytest.raises(FileNotFoundError):
        read_nonmem(DATA / "missing.csv")
