"""`make run`: any method's options reach the experiment page through its `options` mapping."""

from __future__ import annotations

import pytest

from vptlib.errors import UserError
from vptlib.study.notebooks import template_parameters
from vptlib.study.rerun import EXPERIMENT, experiment_params, parse_args_string


def test_the_experiment_template_names_no_methods_option():
    assert template_parameters(EXPERIMENT) == {"profile_path", "method", "model", "options"}


@pytest.mark.parametrize(
    ("method", "args", "options"),
    [
        ("vision_lora", "-p rank 4", {"rank": 4}),
        ("vpt_deep", "-p prompt_tokens 10 -p lr 0.5", {"prompt_tokens": 10, "lr": 0.5}),
        ("wise_ft", "-p base flyp -p epochs 2", {"base": "flyp", "epochs": 2}),
        ("linear", "-p solver sgd", {"solver": "sgd"}),
    ],
)
def test_every_name_that_is_not_a_template_parameter_is_an_override(method, args, options):
    params = experiment_params(method, parse_args_string(args))
    assert params == {"method": method, "options": options}


def test_an_option_of_another_method_is_refused_before_anything_runs():
    with pytest.raises(UserError, match="unknown parameter 'rank': not a setting of a run or of vpt_shallow"):
        experiment_params("vpt_shallow", parse_args_string("-p rank 4"))
    with pytest.raises(UserError, match="-p rank is given twice"):
        parse_args_string("-p rank 4 -p rank 2")
    with pytest.raises(UserError, match="unknown method"):
        experiment_params("no_such_method", {})


def test_the_model_and_an_options_mapping_pass_through():
    params = experiment_params("vision_lora", {"options": {"rank": 8}, "alpha": 16}, model="models/x")
    assert params == {"method": "vision_lora", "model": "models/x", "options": {"rank": 8, "alpha": 16}}
