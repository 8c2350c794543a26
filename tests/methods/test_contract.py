"""The method contract, checked on every registered method (timm's test_models.py is the model).

A method joins these tests by being registered in ``vptlib.methods.METHODS``; nothing here
names one. The last test registers a toy method with only a module and a registry entry and
shows that it passes the same checks and reaches the CLI, ``make run``, the toc and the report.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import inspect

import pytest
import torch
from torch import nn

from vptlib.methods import METHODS, build
from vptlib.methods import base as base_module
from vptlib.methods.base import CAPABILITIES, HOOKS, Classifier, TextOptions, Wrapper
from vptlib.models.backbone import load_clip

NUM_CLASSES = 4


@pytest.fixture(scope="module")
def tiny_clip(tiny_model):
    return load_clip(tiny_model)


def _pixels(clip, n: int = 4) -> torch.Tensor:
    size = clip.model.config.vision_config.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def check_contract(name: str, clip) -> None:
    """Everything the engine, the feature cache, the recorder and the report rely on."""
    spec = METHODS[name]
    torch.manual_seed(0)
    model = build(name, clip, NUM_CLASSES)
    assert isinstance(model, Classifier)
    x, y = _pixels(clip), torch.arange(NUM_CLASSES)

    # forward: (B, C) finite logits, in eval and in train mode
    with torch.no_grad():
        logits = model.eval()(x)
    assert logits.shape == (len(x), NUM_CLASSES) and torch.isfinite(logits).all()

    # requires_grad is exactly what trains and what a checkpoint holds
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    assert set(model.fitted_buffers) <= set(buffers), f"{name}: fitted_buffers names a tensor that is no buffer"
    assert set(model.trainable_state()) == trainable | set(model.fitted_buffers)
    assert set(model.data_sized) <= set(model.trainable_state())
    assert bool(trainable) == spec.trains, f"{name}: trains={spec.trains} but {len(trainable)} trainable tensors"
    undeclared = sorted(n for n in trainable if not any(fnmatch.fnmatchcase(n, p) for p in model.trainable_patterns))
    assert not undeclared, f"{name}: trains {undeclared[:3]} outside its trainable_patterns {model.trainable_patterns}"

    # capabilities: declared, and true of the behaviour
    for cap in CAPABILITIES:
        assert hasattr(model, cap), f"{name} lacks the capability attribute {cap}"
    if model.uses_feature_cache:
        feats = model.features(x)
        assert isinstance(model.head, nn.Module) and feats.shape == (len(x), model.head.in_features)
        with torch.no_grad():
            torch.testing.assert_close(model.head(feats.float()), logits, rtol=1e-4, atol=1e-5)
    if spec.uses_text:
        assert set(model.text_prompts) == set(clip_classes()) and all(model.text_prompts.values())
    else:
        assert model.text_prompts is None

    # the hooks run with their documented arguments
    assert isinstance(model.describe(), str) and model.describe()
    groups = model.param_groups(0.1)
    assert {id(p) for g in groups for p in g["params"]} == {
        id(p) for n, p in model.named_parameters() if n in trainable
    }
    model.on_epoch_start(0)
    if trainable:
        model.train()
        loss = model.loss(model(x[: len(y)]), y)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        model.on_step_end()
        frozen_grads = [n for n, p in model.named_parameters() if not p.requires_grad and p.grad is not None]
        assert not frozen_grads, f"{name}: frozen tensors got gradients: {frozen_grads[:3]}"
        # A trainable tensor that gets no gradient breaks data-parallel training (DDP waits for
        # it) unless the method declares that it may happen.
        idle = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert not idle or model.unused_params_possible, f"{name}: {idle[:3]} got no gradient (unused_params_possible?)"

    # the options: every field has a default, a flag has help, a wrong option is refused
    for f in dataclasses.fields(spec.options):
        assert f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING, f.name
        if "flag" in f.metadata:
            assert f.metadata["flag"].startswith("--") and f.metadata["help"]
    with pytest.raises(ValueError, match="do not apply"):
        build(name, clip, NUM_CLASSES, no_such_option=1)
    # a bool option's flag sets it either way, whatever its default (a store_true flag could
    # never turn off an option that defaults to True)
    for f in dataclasses.fields(spec.options):
        if "flag" in f.metadata and isinstance(f.default, bool):
            on, off = f.metadata["flag"], "--no-" + f.metadata["flag"].removeprefix("--")
            for argv, want in (([on], True), ([off], False)):
                assert getattr(build_parser_run(["--method", name, "--data", "d", *argv]), f.name) is want, (
                    f.name,
                    argv,
                )
    assert spec.defaults.epochs >= 0 and spec.defaults.lr > 0 and spec.title


def clip_classes() -> tuple[str, ...]:
    from vptlib.data.classes import CLASSES

    return CLASSES


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_keeps_the_contract(name, tiny_clip):
    check_contract(name, tiny_clip)


@pytest.mark.parametrize("name", list(METHODS))
def test_building_leaves_the_callers_model_alone(name, tiny_clip):
    before = {k: v.clone() for k, v in tiny_clip.model.state_dict().items()}
    model = build(name, tiny_clip, NUM_CLASSES).train()
    if any(p.requires_grad for p in model.parameters()):
        model.loss(model(_pixels(tiny_clip)), torch.arange(NUM_CLASSES)).backward()
    after = tiny_clip.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in tiny_clip.model.parameters())


def test_every_overridable_method_of_the_contract_is_a_hook():
    """A hook added to Classifier later must be listed in HOOKS, so a Wrapper forwards it."""
    own = {n for n, v in vars(Classifier).items() if inspect.isfunction(v) and not n.startswith("_")}
    assert own - {"trainable_state"} == set(HOOKS)


def test_a_wrapper_forwards_every_hook_and_capability():
    calls = []

    class Inner(Classifier):
        uses_feature_cache = True
        batch_loss_is_global = True
        unused_params_possible = True
        text_prompts = {"a": ["an a"]}

        def __init__(self):
            super().__init__()
            self.head = nn.Linear(2, 2)

        def forward(self, x):
            calls.append("forward")
            return x

    for hook in HOOKS:
        setattr(Inner, hook, lambda self, *a, _h=hook, **k: calls.append(_h) or _h)

    wrapped = Wrapper(Inner())
    assert wrapped(torch.zeros(1, 2)).shape == (1, 2)
    for hook in HOOKS:
        assert getattr(wrapped, hook)(*[None] * _arity(hook)) == hook
    assert calls == ["forward", *HOOKS]
    assert all(getattr(wrapped, cap) == getattr(wrapped.inner, cap) for cap in CAPABILITIES)
    # Written out, so grep and a debugger find each one: no setattr loop, no lambda properties.
    for hook in HOOKS:
        assert inspect.isfunction(vars(Wrapper).get(hook)), f"Wrapper.{hook} must be a plain method"
    for cap in CAPABILITIES:
        assert isinstance(vars(Wrapper).get(cap), property) and vars(Wrapper)[cap].fget.__name__ == cap, cap
    assert "setattr(" not in inspect.getsource(base_module)


def _arity(hook: str) -> int:
    return len(inspect.signature(getattr(Classifier, hook)).parameters) - 1


def test_a_new_method_is_its_module_and_one_registry_line(monkeypatch, tiny_clip, tmp_path):
    """What adding a method touches: a module (Options, DEFAULTS, a Classifier, build) and one
    registry line. It then keeps the contract and appears in the CLI, make run, the toc and the report."""
    import contextlib
    import io

    import vptlib.methods as methods
    from vptlib.cli import build_parser
    from vptlib.methods.base import TrainDefaults, flag, linear_head, vision_model
    from vptlib.report import loading
    from vptlib.study import book, rerun

    @dataclasses.dataclass
    class Options(TextOptions):
        scale: float = flag(1.0, "--toy-scale", "toy: logit scale (default 1.0)")

    class Toy(Classifier):
        trainable_patterns = ("head.*",)

        def __init__(self, clip, num_classes, opts):
            super().__init__()
            self.vision = vision_model(clip).requires_grad_(False)
            self.head = linear_head(self.vision.config.hidden_size, num_classes)
            self.text_prompts = {c: [f"a {c}"] for c in opts.class_names}
            self.scale = opts.scale

        def forward(self, pixel_values):
            return self.scale * self.head(self.vision(pixel_values=pixel_values).pooler_output)

        def describe(self):
            return "a head on the frozen CLS feature"

    spec = methods.MethodSpec(lambda clip, c, opts: Toy(clip, c, opts), Options, TrainDefaults(3, 0.1), "Toy")
    monkeypatch.setitem(methods.METHODS, "toy", spec)

    check_contract("toy", tiny_clip)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        build_parser().parse_args(["run", "--help"])
    assert "--toy-scale" in out.getvalue() and "toy" in out.getvalue()
    assert rerun.experiment_params("toy", {"scale": 2.0, "lr": 0.5}) == {
        "method": "toy",
        "options": {"scale": 2.0, "lr": 0.5},
    }
    assert "book/generated/experiments/toy" in book.write_toc(tmp_path / "toc.yml").read_text()
    assert loading.TITLES["toy"] == "Toy" and "toy" in loading.TITLES.order


# ---- The contract's unwritten rules, written: each broken variant of a BitFit-like method fails.


def _bitfit(monkeypatch, *, unfreeze_tower=False, idle_tensor=False, bool_default=None):
    """A method training the vision tower's biases and a head, broken as asked; registered as "bitfit"."""
    import vptlib.methods as methods
    from vptlib.methods.base import TrainDefaults, flag, linear_head, vision_model

    fields = {} if bool_default is None else {"use_ln": flag(bool_default, "--bitfit-ln", "bitfit: also the norms")}
    Options = dataclasses.make_dataclass("Options", [(k, bool, v) for k, v in fields.items()], bases=(), namespace={})

    class BitFit(Classifier):
        trainable_patterns = ("vision.*.bias", "head.*", "spare")

        def __init__(self, clip, num_classes, opts):
            super().__init__()
            self.vision = copy.deepcopy(vision_model(clip))
            for n, p in self.vision.named_parameters():
                p.requires_grad_(unfreeze_tower or n.endswith(".bias"))
            self.head = linear_head(self.vision.config.hidden_size, num_classes)
            if idle_tensor:
                self.spare = nn.Parameter(torch.zeros(3))  # trainable, used by nothing

        def forward(self, pixel_values):
            return self.head(self.vision(pixel_values=pixel_values).pooler_output)

        def describe(self):
            return "the vision tower's biases and a head"

    spec = methods.MethodSpec(lambda clip, c, opts: BitFit(clip, c, opts), Options, TrainDefaults(3, 0.01), "BitFit")
    monkeypatch.setitem(methods.METHODS, "bitfit", spec)


def test_bitfit_as_written_keeps_the_contract(monkeypatch, tiny_clip):
    _bitfit(monkeypatch)
    check_contract("bitfit", tiny_clip)


def test_a_tower_left_unfrozen_outside_the_declared_set_fails(monkeypatch, tiny_clip):
    _bitfit(monkeypatch, unfreeze_tower=True)
    with pytest.raises(AssertionError, match="outside its trainable_patterns"):
        check_contract("bitfit", tiny_clip)


def test_a_trainable_tensor_that_gets_no_gradient_fails_unless_declared(monkeypatch, tiny_clip):
    _bitfit(monkeypatch, idle_tensor=True)
    with pytest.raises(AssertionError, match=r"\['spare'\] got no gradient"):
        check_contract("bitfit", tiny_clip)


def test_a_bool_option_the_command_line_cannot_turn_off_fails(monkeypatch, tiny_clip):
    """A bool option defaulting to True: its flag must have a --no- form that sets it False."""
    _bitfit(monkeypatch, bool_default=True)
    check_contract("bitfit", tiny_clip)  # the generated --no-bitfit-ln makes it switchable
    args = build_parser_run(["--method", "bitfit", "--data", "d", "--no-bitfit-ln"])
    assert args.use_ln is False
    assert build_parser_run(["--method", "bitfit", "--data", "d", "--bitfit-ln"]).use_ln is True
    assert build_parser_run(["--method", "bitfit", "--data", "d"]).use_ln is None  # unset: the method's default


def build_parser_run(argv: list[str]):
    from vptlib.cli import build_parser

    return build_parser("run").parse_args(["run", *argv])
