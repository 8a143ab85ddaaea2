"""recurrent.validation: every config value checked by its field's type and declared range."""
import argparse
import math
from dataclasses import dataclass, field

import pytest

from recurrent.errors import UserError
from recurrent.train.classify import TrainClassifyConfig
from recurrent.train.lm import TrainLMConfig
from recurrent.train.loop import flat_replace
from recurrent.train.translate import TrainTranslateConfig
from recurrent.validation import Range, at_least, check, flag, fraction, positive


@dataclass
class Inner:
    hidden_size: int = 8  # *_size: >= 1 by its name
    offset: int = -1  # a plain int: any
    rate: float = field(default=0.5, metadata=fraction())


@dataclass
class Outer:
    lr: float = field(default=0.1, metadata=positive())
    steps: int = field(default=0, metadata=at_least(0))
    name: str | None = None
    kind: str = field(default="a", metadata={"choices": ("a", "b")})
    on: bool = False
    inner: Inner = field(default_factory=Inner)


@pytest.mark.parametrize("changes, message", [
    ({"lr": math.nan}, "lr must be a finite number > 0, got nan"),
    ({"lr": 0.0}, "lr must be > 0, got 0.0"),
    ({"lr": "fast"}, "lr must be a finite number > 0, got 'fast'"),
    ({"steps": -1}, "steps must be >= 0, got -1"),
    ({"steps": 2.5}, "steps must be an integer >= 0, got 2.5"),
    ({"steps": True}, "steps must be an integer >= 0, got True"),
    ({"name": 3}, "name must be a string, got 3"),
    ({"kind": "c"}, "kind must be one of ('a', 'b'), got 'c'"),
    ({"on": "no"}, "on must be true or false, got 'no'"),
    ({"on": 1}, "on must be true or false, got 1"),
    ({"inner": Inner(hidden_size=0)}, "hidden_size must be >= 1, got 0"),
    ({"inner": Inner(rate=1.0)}, "rate must be in [0, 1), got 1.0"),
    ({"inner": Inner(rate=math.inf)}, "rate must be a finite number in [0, 1), got inf"),
])
def test_a_bad_value_is_named_with_what_it_must_be(changes, message):
    with pytest.raises(UserError) as e:
        check(Outer(**changes))
    assert str(e.value) == message


def test_good_values_pass_and_an_int_may_stand_for_a_float():
    check(Outer(lr=1, steps=3, name="x", kind="b", on=True, inner=Inner(offset=-5, rate=0.0)))


def test_the_caller_names_the_field():
    with pytest.raises(UserError, match=r"^--max-steps must be >= 0, got -2$"):
        check(Outer(steps=-2), name=lambda f: "--max-steps")


def test_ranges_print_as_intervals():
    assert [str(r) for r in (Range(0), Range(0, low_open=True), Range(0, 1), Range(0, 1, high_open=True),
                             Range(0.5, 2.5, True, True), Range())] == [">= 0", "> 0", "in [0, 1]", "in [0, 1)",
                                                                         "in (0.5, 2.5)", ""]
    assert 0 in Range(0) and 0 not in Range(0, low_open=True) and 1 not in Range(0, 1, high_open=True)


def test_a_flag_type_parses_then_checks():
    parse = flag(float, **positive())
    assert parse("0.5") == 0.5
    for text, message in [("nan", "must be a finite number > 0, got nan"), ("-1", "must be > 0, got -1.0"),
                          ("x", "must be a finite number > 0, got 'x'")]:
        with pytest.raises(argparse.ArgumentTypeError, match=f"^{message.replace('(', '.').replace(')', '.')}$"):
            parse(text)


@pytest.mark.parametrize("config, changes, message", [
    (TrainLMConfig(), {"weight_decay": math.nan}, "weight_decay must be a finite number >= 0, got nan"),
    (TrainLMConfig(), {"embedding_size": -3}, "embedding_size must be >= 0, got -3"),
    (TrainLMConfig(), {"hidden_size": "big"}, "hidden_size must be an integer >= 1, got 'big'"),
    (TrainLMConfig(), {"resume": "no"}, "resume must be true or false, got 'no'"),
    (TrainLMConfig(), {"dropout_hidden": 1.0}, "dropout_hidden must be in [0, 1), got 1.0"),
    (TrainClassifyConfig(train="a", valid="b"), {"unk_replace": 1.5}, "unk_replace must be in [0, 1], got 1.5"),
    (TrainClassifyConfig(train="a", valid="b"), {"pooling": "sum"}, "pooling must be one of"),
    (TrainTranslateConfig(synthetic="reverse"), {"decoder_layers": 0}, "decoder_layers must be >= 1, got 0"),
    (TrainTranslateConfig(synthetic="reverse"), {"src": "a.txt"}, "--task reverse makes its own data: --src"),
])
def test_the_train_configs_validate_their_nested_training_and_model_configs(config, changes, message):
    with pytest.raises(UserError) as e:
        flat_replace(config, **changes).validate()
    assert str(e.value).startswith(message), str(e.value)


def test_the_default_configs_are_valid():
    for config in (TrainLMConfig(), TrainClassifyConfig(), TrainTranslateConfig()):
        check(config)
