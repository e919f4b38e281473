"""The algorithm contract: objects validated when made, JSON and flags generated from them."""
from __future__ import annotations

import argparse

import jsonschema
import pytest

from processes.lidar import Params, algorithms, dalponte2016, lmf, p2r, pitfree, tin, watershed
from processes.lidar.errors import InvalidParameter
from processes.lidar.trees import crown_window


@pytest.mark.parametrize("make", [
    lambda: lmf(shape="triangle"), lambda: lmf(ws=-1), lambda: lmf(hmin=float("nan")),
    lambda: pitfree(max_edge=(1.0,)), lambda: pitfree(thresholds=()), lambda: tin(fallback=3),
    lambda: crown_window(wmin=5, wmax=4), lambda: dalponte2016(th_seed=2), lambda: p2r(subcircle="x"),
])
def test_bad_parameters_are_refused_when_the_object_is_made(make):
    with pytest.raises(InvalidParameter):
        make()


def test_every_family_round_trips_through_json_and_its_schema():
    for family in algorithms.FAMILIES:
        schema = algorithms.input_description(family)["schema"]
        jsonschema.validators.validator_for(schema).check_schema(schema)
        for name, cls in algorithms.members(family).items():
            obj = cls()
            doc = algorithms.describe(obj)
            assert doc["algorithm"] == name
            jsonschema.validate(doc, schema)  # the default of each algorithm is valid input
            assert algorithms.build(family, doc) == obj
    # the default algorithm may leave out its name, the others may not
    jsonschema.validate({"hmin": 3}, algorithms.input_description("trees")["schema"])
    chm = algorithms.input_description("chm")["schema"]
    jsonschema.validate({"subcircle": 0.1}, chm)
    jsonschema.validate({"algorithm": "p2r", "subcircle": 0.1}, chm)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"algorithm": "p2r", "fill": 1}, chm)


def test_build_reads_nested_objects_and_refuses_unknown_keys():
    assert algorithms.build("trees", {"ws": {"k": 0.1}}) == lmf(ws=crown_window(k=0.1))
    assert algorithms.build("trees", {"ws": 4}) == lmf(ws=4)
    assert algorithms.build("crowns", "dalponte2016") == dalponte2016()
    assert algorithms.build("crowns", None) == watershed()
    assert algorithms.build("noise", None) is None
    assert algorithms.build("chm", {"algorithm": "pitfree", "max_edge": [2, 1]}).max_edge == (2, 1)
    for bad in ({"algorithm": "nosuch"}, {"wx": 1}, {"ws": {"q": 1}}, 5):
        with pytest.raises(InvalidParameter):
            algorithms.build("trees", bad)


def test_params_round_trip_for_the_tile_children():
    p = Params(tile_size=100, chm=p2r(subcircle=0.2), trees=lmf(ws=crown_window(k=0.1), hmin=3), noise=None)
    assert Params.from_dict(p.to_dict()) == p
    with pytest.raises(InvalidParameter):
        Params.from_dict({"tile_sise": 3})


def test_command_line_flags_come_from_the_objects():
    parser = argparse.ArgumentParser()
    for family in algorithms.FAMILIES:
        algorithms.add_flags(parser, family)
    a = parser.parse_args(["--chm", "p2r", "--chm-subcircle", "0.2", "--trees-ws", "4", "--crowns", "dalponte2016",
                           "--crowns-max-cr", "6", "--dtm-max-edge", "8"])
    assert algorithms.from_flags(a, "chm") == p2r(subcircle=0.2)
    assert algorithms.from_flags(a, "trees") == lmf(ws=4.0)
    assert algorithms.from_flags(a, "crowns") == dalponte2016(max_cr=6.0)
    assert algorithms.from_flags(a, "dtm") == tin(max_edge=8.0)
    assert algorithms.from_flags(parser.parse_args([]), "chm") == pitfree()
    with pytest.raises(InvalidParameter):  # a parameter the chosen algorithm does not have
        algorithms.from_flags(parser.parse_args(["--chm", "p2r", "--chm-fill", "2"]), "chm")
