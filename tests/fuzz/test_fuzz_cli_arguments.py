"""Fuzzing the CLI's numeric arguments, architecture strings and ``--set`` values.

Each example runs one real command in-process with one argument replaced by fuzzed text; the rest
are tiny valid values, so an accepted input finishes in a fraction of a second. The invariant is
:func:`conftest.check_promise`; for a construction, a refused run must also leave its folder fit
for the corrected command.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from .conftest import FUZZ, check_promise

BAD_NUMBERS = ["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "0", "-0", "-1", "-0.5", "1e308", "1e400", "-1e308",
               "1e-400", "5e-324", "9223372036854775807", "9223372036854775808", "-9223372036854775809",
               "18446744073709551616", "1.5", "", " ", "abc", "0x10", "1_000", "2**64", "1e3"]
# text that may be any number at all (valid, huge, tiny, negative, non-finite)
any_number = st.one_of(st.sampled_from(BAD_NUMBERS), st.floats().map(repr),
                       st.integers(min_value=-(2**70), max_value=2**70).map(str))
# for counts that set the amount of work (steps, epochs): only bad values or small valid ones
work_count = st.one_of(st.sampled_from(BAD_NUMBERS[:12] + BAD_NUMBERS[15:]), st.integers(min_value=-5, max_value=2).map(str))


@FUZZ
@given(attack=st.sampled_from(["pgd", "fgsm", "cw-l2", "deepfool", "lbfgs", "apgd"]), norm=st.sampled_from(["L2", "Linf"]),
       option=st.sampled_from(["--eps", "--n", "--batch-size", "--seed"]), value=any_number)
def test_attack_numbers(files, attack, norm, option, value, fresh_dir):
    with fresh_dir() as out:
        args = {"--eps": "0.3", "--n": "6", "--batch-size": "6", "--seed": "0"}
        args[option] = value
        flat = [x for k, v in args.items() for x in (k, v)]
        check_promise(["attack", "--model", str(files["model"]), "--attack", attack, "--norm", norm, "--steps", "2", *flat,
                       "--out", str(out / "a.json")], folder=out)


@FUZZ
@given(option=st.sampled_from(["--steps", "--queries"]), value=work_count, attack=st.sampled_from(["pgd", "square", "deepfool"]))
def test_attack_work_counts(files, option, value, attack, fresh_dir):
    with fresh_dir() as out:
        args = {"--steps": "2", "--queries": "4"}
        args[option] = value
        flat = [x for k, v in args.items() for x in (k, v)]
        check_promise(["attack", "--model", str(files["model"]), "--attack", attack, "--norm", "L2", "--eps", "0.5", "--n", "4",
                       *flat, "--out", str(out / "a.json")], folder=out)


@FUZZ
@given(kind=st.sampled_from(["d_rand", "d_r"]), option=st.sampled_from(["--eps", "--step-size", "--shard-size", "--batch-size",
                                                                        "--n", "--seed", "--steps"]), value=any_number)
def test_construct_numbers_never_poison_the_folder(files, kind, option, value, fresh_dir):
    with fresh_dir() as root:
        out = root / "c"
        base = {"--step-size": "0.1", "--shard-size": "4", "--batch-size": "4", "--n": "4", "--seed": "0", "--steps": "1"}
        if kind == "d_rand":
            base["--eps"] = "0.5"
        args = dict(base)
        if option == "--steps" and value.strip().lstrip("+").isdigit() and int(value) > 3:
            value = "-3"  # keep the work small: big valid step counts are not the point here
        args[option] = value
        cmd = ["construct", "--kind", kind, "--model", str(files["model"]), "--out", str(out)]
        res = check_promise([*cmd, *[x for k, v in args.items() for x in (k, v)]], folder=out.parent)
        if res.exit_code == 2:  # the corrected command then runs in the same folder
            good = check_promise([*cmd, *[x for k, v in base.items() for x in (k, v)]], folder=out.parent)
            assert good.exit_code == 0, good.output


@FUZZ
@given(option=st.sampled_from(["--lr", "--batch-size", "--seed", "--n", "--eps", "--epochs", "--attack-steps"]), value=any_number)
def test_train_numbers(files, option, value, fresh_dir):
    with fresh_dir() as out:
        if option in ("--epochs", "--attack-steps") and value.strip().lstrip("+").isdigit() and int(value) > 2:
            value = "0"
        args = {"--n": "32", "--epochs": "1", "--batch-size": "16"}
        args[option] = value
        adversarial = option in ("--eps", "--attack-steps")
        extra = ["--adversarial", "--attack-steps", args.pop("--attack-steps", "1")] if adversarial else []
        check_promise(["train", "--arch", "mlp:hidden=8", *extra, *[x for k, v in args.items() for x in (k, v)],
                       "--out", str(out / "m.safetensors")], folder=out)


SET_KEYS = ["lr", "momentum", "weight_decay", "gamma", "crop_padding", "batch_size", "seed", "milestones", "optimizer",
            "flip", "epochs", "adversary.eps", "adversary.steps", "adversary.step_size", "adversary.norm", "no_such_key"]
JSON_VALUES = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "-1", "0", "1e308", "1e10", "0.5", "[1, 2]", '"x"', "true",
               "null", "{}", "[]", "[" * 3000 + "]" * 3000, '{"a": ' * 3000 + "1" + "}" * 3000, "\udcff", "1.5"]


@FUZZ
@given(key=st.sampled_from(SET_KEYS), value=st.one_of(st.sampled_from(JSON_VALUES), st.floats().map(repr),
                                                       st.text(max_size=8)))
def test_train_set_values(files, key, value, fresh_dir):
    with fresh_dir() as out:
        if key in ("epochs", "adversary.steps") and value.strip().isdigit() and int(value) > 2:
            value = "-1"
        adv = ["--adversarial", "--attack-steps", "1"] if key.startswith("adversary.") else []
        check_promise(["train", "--arch", "mlp:hidden=8", "--n", "32", "--epochs", "1", "--batch-size", "16", *adv,
                       "--set", f"{key}={value}", "--out", str(out / "m.safetensors")], folder=out)


ARCHS = ["mlp:hidden=0", "mlp:hidden=-4", "mlp:hidden=nan", "mlp:hidden=inf", "mlp:hidden=1e400", "mlp:bogus=3",
         "cnn:width=0", "cnn:width=-1", "cnn:width=2.5", "cnn:hidden=0", "cnn:depth=3", "mlp:hidden=8x0", "mlp:", ":",
         "nosuch", "os:system", "mlp:hidden=99999999999999999999", "cnn:width=nan,hidden=4", "mlp:hidden=true"]


@FUZZ
@given(arch=st.one_of(st.sampled_from(ARCHS), st.text(max_size=12)))
def test_train_architectures(files, arch, fresh_dir):
    with fresh_dir() as out:
        check_promise(["train", "--arch", arch, "--n", "32", "--epochs", "1", "--batch-size", "16",
                       "--out", str(out / "m.safetensors")], folder=out)


@FUZZ
@given(key=st.sampled_from(["standard.epochs", "standard.lr", "seed", "construction.shard_size", "adversarial.adversary.eps",
                            "evaluation.attacks", "train_limit", "construction.relabel.eps", "standard.weight_decay",
                            "evaluation.margin_se", "threads"]),
       value=st.one_of(st.sampled_from(JSON_VALUES), st.floats().map(repr), st.integers(min_value=-(2**70), max_value=2**70).map(str)))
def test_reproduce_set_values_resolve_or_refuse(key, value):
    """Every --set value either resolves to a configuration with finite numbers or is refused
    with one ConfigError (the reproduce command resolves the configuration before any work)."""
    import json

    from advfeatures.errors import ConfigError
    from advfeatures.experiments.config import resolve_config, to_dict

    try:
        cfg, _ = resolve_config("digits", overrides=[f"{key}={value}"])
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    json.dumps(to_dict(cfg), allow_nan=False)  # raises on a nan or inf that got through
