"""The stream format module: the syntax is pure, and everything else agrees with it."""

import json
import subprocess
import sys

import numpy as np

from codec_core import format as fmt
from codec_core.bitstream import SessionHeader
from codec_core.config import Steps, load_config

SYNTAX_MODULES = ("codec_core.format", "codec_core.bitstream", "codec_core.arith", "codec_core.param_coding",
                  "codec_core.reference", "codec_core.container", "codec_core.sei")
HEAVY = ("torch", "cv2", "scipy", "mediapipe", "models")


def test_the_syntax_modules_load_no_heavy_package_in_a_fresh_interpreter():
    code = (f"import sys, json\nfor m in {SYNTAX_MODULES!r}: __import__(m)\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_the_parameter_layout_is_named():
    names = fmt.param_names(3)
    assert len(names) == fmt.NUM_FIXED + 3 and len(fmt.FIXED_STEPS) == fmt.NUM_FIXED
    assert names[fmt.I_YAW] == "yaw" and names[fmt.I_SCALE] == "log_scale" and names[fmt.I_GAZE_Y] == "gaze_y"
    assert names[fmt.POSE] == fmt.POSE_NAMES and names[fmt.EYES] == fmt.EYE_NAMES
    assert names[fmt.EXPRESSION] == ("expr_0", "expr_1", "expr_2")


def test_steps_travel_in_the_format_order():
    steps = load_config().steps
    assert tuple(f for f in Steps.__dataclass_fields__) == fmt.STEP_NAMES == fmt.IFVC.step_names
    header = SessionHeader(fmt.IFVC.id, 256, 256, 25, 1, 0, "v1", fmt.IFVC.count, 50, steps.values(), 0.002)
    assert SessionHeader.unpack(header.pack()).steps == tuple(float(np.float32(s)) for s in steps.values())
    v = fmt.step_vector(steps.values(), fmt.NUM_FIXED + 2)
    assert v[fmt.I_ROLL] == np.float32(steps.angle) and v[fmt.I_TY] == np.float32(steps.translation)
    assert (v[fmt.EXPRESSION] == np.float32(steps.expression)).all()


def test_ring_weights_fit_their_bits():
    assert fmt.RING_WEIGHT_MAX == (1 << fmt.RING_WEIGHT_BITS) - 1
    assert fmt.NUM_RING_POINTS == fmt.RING_COUNT * len(fmt.FACE_OVAL)


def test_the_face_basis_asset_agrees_with_the_format():
    from models.face_model import FaceBasis

    basis = FaceBasis.load()
    assert basis.mean.shape == (fmt.NUM_LANDMARKS, 3)
    assert basis.num_expression == fmt.EXPRESSION_COUNT[basis.version]
    assert basis.num_params == fmt.num_params(basis.version)
    predictors = fmt.geometry_predictors(basis.mean)
    assert predictors[0] == -1 and all(0 <= p < i for i, p in enumerate(predictors) if i)


def test_the_synthesizers_ring_layout_agrees_with_the_format():
    from models.face_model import FaceBasis
    from models.synthesizer import RING_SCALES, default_ring_weights, ring_layout

    basis = FaceBasis.load()
    landmarks = basis.mean * 60 + 128            # a face of the basis's mean shape in a 256 crop
    rings, lower = ring_layout(landmarks, 256)
    assert len(RING_SCALES) == fmt.RING_COUNT
    assert rings.shape == (fmt.NUM_RING_POINTS, 3) and lower.shape == (fmt.NUM_RING_POINTS,)
    weights = default_ring_weights(lower, np.full(len(lower), 0.5))
    assert weights.shape == (fmt.NUM_RING_POINTS,) and 0 <= weights.min() and weights.max() <= fmt.RING_WEIGHT_MAX
    assert default_ring_weights(lower).max() == fmt.RING_WEIGHT_MAX
