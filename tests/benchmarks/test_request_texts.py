"""benchmarks/request_texts.py: serving-benchmark requests are real rows of
the bundled data, one kind per signature input."""

import pytest

from benchmarks import request_texts


@pytest.mark.parametrize("input_key, data_name", [
    ("text", "sst2"), ("prompt", "shakespeare"), ("source", "multi30k")])
def test_request_texts_are_real_rows_of_the_bundled_data(input_key, data_name):
  name, texts = request_texts.request_texts(input_key)
  assert name == data_name
  assert len(texts) == request_texts.NUM_TEXTS
  assert all(isinstance(t, str) and t.strip() for t in texts)
  assert len(set(texts)) > request_texts.NUM_TEXTS // 2
  if input_key == "prompt":
    assert {len(t) for t in texts} == {request_texts.PROMPT_CHARACTERS}


def test_unknown_input_is_an_error_naming_the_known_ones():
  with pytest.raises(ValueError, match="inputs with data: .*prompt"):
    request_texts.request_texts("image")
