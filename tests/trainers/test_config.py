"""TrainConfig helpers: JSON round trip and --model_overrides parsing."""

import pytest

from trainers.config import TrainConfig, parse_overrides, read_json, write_json
from zoo.presets import get_preset


def test_config_json_round_trip(tmp_path):
  config = TrainConfig(task="text_classification", preset="tiny", model_dir="x",
                       jit_compile=True, learning_rate=3e-4)
  write_json(str(tmp_path / "c.json"), config.to_dict())
  assert TrainConfig.from_dict(read_json(str(tmp_path / "c.json"))) == config
  assert not (tmp_path / "c.json.tmp").exists()


def test_overrides_are_typed_like_the_preset():
  preset = get_preset("encoder", "small")
  assert parse_overrides("dropout=0.25, num_layers=3,pooling=cls", preset) == {
      "dropout": 0.25, "num_layers": 3, "pooling": "cls"}
  assert parse_overrides("", preset) == {}


@pytest.mark.parametrize("text, message", [
    ("depth=3", "key one of"),
    ("num_layers", "expected key=value"),
    ("num_layers=two", "num_layers takes a int"),
])
def test_bad_overrides_name_the_item(text, message):
  with pytest.raises(ValueError, match=message):
    parse_overrides(text, get_preset("encoder", "small"))
