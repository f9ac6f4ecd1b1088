"""TF Serving's REST API over real HTTP: formats, status, metadata, metrics, errors."""

import base64

import pytest
import requests

from tests.serving.conftest import rest_url


@pytest.fixture
def url(tf2_server):
  return rest_url(tf2_server)


def _post(url, path, body):
  if isinstance(body, (bytes, str)):
    return requests.post(url + path, data=body, timeout=30)
  return requests.post(url + path, json=body, timeout=30)


def test_predict_row_format(url):
  r = _post(url, "/v1/models/m:predict", {"instances": ["hello world", "hi"]})
  assert r.status_code == 200, r.text
  assert r.headers["Content-Type"].startswith("application/json")
  predictions = r.json()["predictions"]
  assert [p["label"] for p in predictions] == ["positive", "negative"]
  assert [p["version"] for p in predictions] == [2, 2]
  assert len(predictions[0]["probabilities"]) == 2


def test_predict_columnar_format_and_b64(url):
  text = base64.b64encode("hello world".encode()).decode()
  r = _post(url, "/v1/models/m/versions/1:predict", {"inputs": {"text": [{"b64": text}]}})
  assert r.status_code == 200, r.text
  outputs = r.json()["outputs"]
  assert outputs["label"] == ["positive"] and outputs["version"] == [1]
  r = _post(url, "/v1/models/m/labels/stable:predict", {"inputs": ["hi"]})
  assert r.json()["outputs"]["version"] == [1]


def test_predict_named_instances_and_bytes_outputs(url):
  body = {"signature_name": "two_inputs", "instances": [{"a": [1, 2, 3], "b": 4},
                                                         {"a": [0.5, 0, 0], "b": 1}]}
  r = _post(url, "/v1/models/m:predict", body)
  assert r.status_code == 200, r.text
  assert r.json()["predictions"] == [{"echo_bytes": {"b64": "NA=="}, "total": 10.0},
                                     {"echo_bytes": {"b64": "MQ=="}, "total": 1.5}]


def test_classify_and_regress(url):
  body = {"signature_name": "classify", "examples": [{"text": "hello world"}, {"text": "x"}]}
  r = _post(url, "/v1/models/m:classify", body)
  assert r.status_code == 200, r.text
  results = r.json()["results"]
  assert [[c[0] for c in row] for row in results] == [["negative", "positive"]] * 2
  assert results[0][1][1] > 0.5 > results[1][1][1]
  r = _post(url, "/v1/models/tf1:regress",
            {"signature_name": "regress_x", "context": {"x": [1.0, 2.5]}, "examples": [{}]})
  assert r.status_code == 200, r.text
  assert r.json() == {"results": [3.5]}


def test_status_and_metadata(url):
  r = requests.get(url + "/v1/models/m", timeout=30)
  assert r.status_code == 200
  assert r.json() == {"model_version_status": [
      {"version": "2", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
      {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}},
  ]}
  r = requests.get(url + "/v1/models/m/labels/stable", timeout=30)
  assert [s["version"] for s in r.json()["model_version_status"]] == ["1"]
  r = requests.get(url + "/v1/models/m/versions/2/metadata", timeout=30)
  meta = r.json()
  assert meta["model_spec"] == {"name": "m", "signature_name": "", "version": "2"}
  sig = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
  assert sig["inputs"]["text"]["dtype"] == "DT_STRING"
  assert sig["method_name"] == "tensorflow/serving/predict"


def test_prometheus_metrics(url):
  _post(url, "/v1/models/m:predict", {"instances": ["metrics please"]})
  _post(url, "/v1/models/nope:predict", {"instances": ["x"]})
  text = requests.get(url + "/monitoring/prometheus/metrics", timeout=30).text
  assert ('tfserving_request_count_total{api="Predict",entrypoint="REST",model_name="m",'
          'signature_name="serving_default",status="OK"}') in text
  # Names that do not exist are not labels (made-up names must not grow the metrics).
  assert 'model_name="",signature_name="",status="NOT_FOUND"' in text
  assert "nope" not in text
  assert 'tfserving_request_latency_seconds_bucket' in text
  assert ('tfserving_model_version_state{model_name="m",state="AVAILABLE",version="2"} 1.0'
          in text)


@pytest.mark.parametrize("method,path,body,status,error", [
    ("POST", "/v1/models/nope:predict", {"instances": ["x"]}, 404,
     "Servable not found for request: Latest(nope)"),
    ("POST", "/v1/models/m/versions/9:predict", {"instances": ["x"]}, 404,
     "Servable not found for request: Specific(m, 9)"),
    ("POST", "/v1/models/m/labels/beta:predict", {"instances": ["x"]}, 400,
     "Unrecognized servable version label: beta"),
    ("POST", "/v1/models/m:predict", {"signature_name": "zz", "instances": ["x"]}, 400,
     'Serving signature name: "zz" not found in signature def'),
    ("POST", "/v1/models/m:predict", {"instances": [1.5]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     "JSON Value: 1.5 Type: Number is not of expected type: string"),
    # A [1,2] text is served now (the kernels decide, as in TF Serving); a scalar
    # is refused by them.
    ("POST", "/v1/models/m:predict", {"inputs": "x"}, 400, None),
    ("POST", "/v1/models/m:predict", {"signature_name": "two_inputs", "instances": [{"a": [1, 2, 3]}]},
     400, "Failed to process element: 0 of 'instances' list. JSON object: {\"a\":[1,2,3]} "
     "keys must be equal to: a,b"),
    ("POST", "/v1/models/m:predict", {"signature_name": "two_inputs", "inputs": {"a": [[1, 2, 3]]}},
     400, "Missing named input: b in 'inputs' object."),
    # No static shape check (as TF Serving): a [2,4] 'a' reaches the kernels,
    # which refuse adding its 2 row sums to 3 'b's.
    ("POST", "/v1/models/m:predict",
     {"signature_name": "two_inputs", "inputs": {"a": [[1, 2, 3, 4]] * 2, "b": [1, 2, 3]}},
     400, None),
    ("POST", "/v1/models/m:predict", {"signature_name": "two_inputs",
                                      "inputs": {"a": [[1, 2, 3]], "b": [1.5]}}, 400,
     "JSON Value: 1.5 Type: Number is not of expected type: int64"),
    ("POST", "/v1/models/m:predict", {"inputs": [{"b64": "!!!"}]}, 400, "Unable to base64 decode"),
    ("POST", "/v1/models/m:predict", b"{not json", 400, None),
    ("POST", "/v1/models/m:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/m:predict", b"[1]", 400, "JSON Value: [1] Is not object"),
    ("POST", "/v1/models/m:predict", {"instances": []}, 400,
     "JSON Value: {\"instances\":[]} No values in 'instances' array"),
    ("POST", "/v1/models/m:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("POST", "/v1/models/m:classify", {"instances": ["x"]}, 400,
     "JSON Value: {\"instances\":[\"x\"]} When method is classify, key 'examples' is "
     "expected and was not found"),
    ("POST", "/v1/models/m:frobnicate", {}, 400, "Malformed request: POST /v1/models/m:frobnicate"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("GET", "/v1/models/m/versions/5", None, 404, "Could not find version 5 of model m"),
    ("GET", "/v1/models/nope/metadata", None, 404, "Servable not found for request: Latest(nope)"),
])
def test_errors(url, method, path, body, status, error):
  if method == "GET":
    r = requests.get(url + path, timeout=30)
  else:
    r = _post(url, path, body)
  assert r.status_code == status, r.text
  message = r.json()["error"]
  if error is not None:
    assert message == error
  else:
    assert message


def test_invalid_utf8_body(url):
  r = _post(url, "/v1/models/m:predict", b'{"instances": ["\xff\xfe"]}')
  assert r.status_code == 400
  assert r.json()["error"].startswith("JSON Parse error")


def test_oversize_body(url):
  r = _post(url, "/v1/models/m:predict", {"instances": ["x" * (300 * 1024)]})
  assert r.status_code == 413
  assert "error" in r.json()


def test_rest_timeout_is_504(url):
  r = _post(url, "/v1/models/m:predict", {"signature_name": "slow", "instances": [10**9]})
  assert r.status_code == 504, r.text
  assert r.json()["error"]
  assert _post(url, "/v1/models/m:predict", {"instances": ["ok"]}).status_code == 200
