"""Every value a space can produce is checked before Ray starts, with one line naming the key, value and rule."""
from __future__ import annotations

import math

import pytest
from ray import tune

import tunevision
from tunevision.errors import TunevisionError
from tunevision.space import KEYS
from tunevision.validate import check_space, values

# key -> (a good value, a bad value, part of what the error says is allowed)
CASES = {
    "backbone": ("cnn", "resnet5", "one of cnn, convnext_tiny, dense"),
    "weights": (None, 3, "'imagenet', None or a local .pth path"),
    "trainable_layers": (0, -1, "a whole number in [0, inf], or None"),
    "trainable_fraction": (0.5, 1.5, "a number in [0, 1], or None"),
    "hidden_units": ([8, 0.5], [8, -2], "a positive int, a fraction in (0, 1]"),
    "activation": ("elu", "tanh", "one of elu, leaky_relu, none, prelu, relu"),
    "dropout": (0.2, 1.0, "a number in [0, 1)"),
    "cnn": ({"channels": [8]}, {"channels": [8], "kernel_size": 4}, "kernel_size a positive odd int"),
    "optimizer": ("adam", "adamm", "one of adadelta, adam, adamw, rmsprop, sgd"),
    "lr": (0.01, 0.0, "a number in (0, inf]"),
    "weight_decay": (0.0, -0.1, "a number in [0, inf]"),
    "momentum": (0.9, 1.5, "a number in [0, 1]"),
    "nesterov": (False, "yes", "True or False"),
    "epsilon": (1e-8, 0, "a number in (0, inf]"),
    "schedule": ("cosine", "linear", "one of constant, cosine, exponential, one_cycle, plateau, step"),
    "schedule_step": (2, 0, "a whole number in [1, inf]"),
    "schedule_gamma": (0.5, 1.5, "a number in (0, 1)"),
    "batch_size": (8, 0, "a whole number in [1, inf]"),
    "label_smoothing": (0.1, 1.0, "a number in [0, 1)"),
    "image_size": (16, 0, "a whole number in [1, inf], or None"),
    "augment": ({"hflip": True}, {"zoom": 2}, "zoom: 2 is not a fraction from 0 to 0.99"),
    "class_weights": (True, "yes", "True or False"),
    "balance": ("oversample", "smote", "one of none, oversample, undersample"),
}
BASE = {"backbone": "cnn", "weights": None, "image_size": 16}


def _search(space, searcher="optuna"):
    return tunevision.Search(name="v", data=tunevision.Digits(), space=BASE | space, searcher=searcher)


def test_every_space_key_has_a_checked_case():
    assert set(CASES) == set(KEYS)


@pytest.mark.parametrize("key", sorted(CASES))
def test_a_bad_choice_of_any_key_fails_naming_key_value_and_rule(key):
    good, bad, allowed = CASES[key]
    check_space(_search({key: good}))
    with pytest.raises(TunevisionError) as error:
        check_space(_search({key: tune.choice([good, bad])}))
    message = str(error.value)
    assert message.startswith(f'space["{key}"]: invalid') and allowed in message and "\n" not in message


def test_range_endpoints_are_checked_but_a_half_open_upper_end_is_not_drawn():
    check_space(_search({"dropout": tune.uniform(0.0, 1.0), "lr": tune.loguniform(1e-4, 1e-1)}))
    with pytest.raises(TunevisionError, match=r'space\["dropout"\]: invalid 1.5'):
        check_space(_search({"dropout": tune.uniform(0.5, 1.5)}))
    with pytest.raises(TunevisionError, match=r'space\["batch_size"\]: invalid 0'):
        check_space(_search({"batch_size": tune.randint(0, 8)}))


def test_grid_values_progressive_stages_and_nested_leaves_are_checked():
    with pytest.raises(TunevisionError, match=r'space\["image_size"\]: invalid -4'):
        check_space(_search({"image_size": tune.grid_search([16, -4])}, searcher="grid"))
    with pytest.raises(TunevisionError, match=r'space\["image_size"\]: invalid 0'):
        check_space(_search({"image_size": tunevision.progressive({0: 16, 2: tune.choice([24, 0])})}))
    with pytest.raises(TunevisionError, match=r"zoom: 3 is not a fraction"):
        check_space(_search({"augment": {"hflip": tune.choice([True, False]), "zoom": tune.choice([0.1, 3])}}))


def test_trainable_layers_beyond_a_candidate_backbone_fail_before_any_trial():
    space = {"backbone": tune.choice(["resnet18", "mobilenet_v3_small"]), "trainable_layers": tune.choice([10, 45])}
    with pytest.raises(TunevisionError, match=r"invalid 45 \(resnet18 has 40 layers"):
        check_space(_search(space))


def test_values_lists_what_can_be_listed():
    assert values(tune.choice([1, 2])) == [1, 2]
    assert values(tune.grid_search(["a", "b"])) == ["a", "b"]
    assert values(tune.randint(2, 9)) == [2, 8]
    assert values(tune.uniform(0, 1))[1] == math.nextafter(1.0, 0.0)
    assert values(tune.sample_from(lambda _: 3)) == []


def test_search_with_a_misspelt_choice_exits_2_before_any_tracking_store_or_ray(tmp_path, monkeypatch, capsys):
    from tunevision import tuner
    from tunevision.cli import main

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a search whose space is wrong")

    monkeypatch.setattr(tuner, "_start_ray", no_ray)
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "typo.py"
    path.write_text("from ray import tune\nimport tunevision\nsearch = tunevision.Search(name='typo', data=tunevision.Digits(),"
                    " space={'backbone': 'cnn', 'optimizer': tune.choice(['adam', 'adamm'])})\n")
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"tunevision: error: {path}: space[\"optimizer\"]: invalid 'adamm' "
                                "(one of adadelta, adam, adamw, rmsprop, sgd)"]
    assert not (tmp_path / "mlflow.db").exists()


def test_a_missing_data_folder_names_the_file_and_the_data_flag(tmp_path, monkeypatch, capsys):
    from tunevision.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "gone.py"
    path.write_text("import tunevision\nsearch = tunevision.Search(name='gone', data=tunevision.ImageFolder('data/none'),"
                    " space={'backbone': 'cnn'})\n")
    assert main(["search", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "--data PATH" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_plain_epoch_dict_in_a_space_asks_for_progressive():
    with pytest.raises(TunevisionError, match=r'space\["image_size"\]: write staged values as tunevision.progressive'):
        check_space(_search({"image_size": {0: 16, 2: 24}}))
