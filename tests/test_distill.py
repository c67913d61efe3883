"""Explanation distillation: the student's differentiable maps are evaluation's maps, the
saliency term trains the quantized model (weights, and alphas where the map depends on them)
and never the teacher, and a distilled trial continues from a checkpoint exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from saliq.build import build_model, trial_data
from saliq.config import parse_trial_config
from saliq.distill import Distillation, Teacher, student_maps
from saliq.errors import ConfigError
from saliq.quant.api import (
    alpha_parameters,
    calibrate_alphas,
    load_fp_weights,
    weight_parameters,
)
from saliq.saliency import GRADIENT_METHODS
from saliq.saliency.attribution import attribute
from saliq.trial import run_trial

SMALL = {"dataset": "fashion-mnist", "limit": {"train": 300, "test": 100},
         "saliency": {"probe_size": 16}, "device": "cpu"}


@pytest.fixture(scope="module")
def setting():
    config = parse_trial_config({**SMALL, "precision": {"default": {"weight_bits": 2,
                                                                     "act_bits": 2}}})
    data = trial_data(config, "cpu")
    torch.manual_seed(0)
    teacher = build_model(config, full_precision=True)
    return config, data, teacher


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_the_students_maps_are_evaluations_maps(method, setting):
    config, data, teacher = setting
    student = load_fp_weights(build_model(config), teacher.state_dict()).eval()
    x = data.probe_x.clone().requires_grad_()
    logits, maps = student_maps(student, x, data.probe_y, method)
    assert maps.requires_grad  # differentiable: create_graph
    reference = attribute(student, data.probe_x, data.probe_y, method, baseline=data.black())
    torch.testing.assert_close(maps.detach(), reference, atol=0, rtol=0)
    top1 = Teacher(teacher, method, "teacher_top1", data.black()).of(data.probe_x, data.probe_y,
                                                                    True)
    torch.testing.assert_close(top1[1], attribute(teacher, data.probe_x, top1[0].argmax(1),
                                                   method, baseline=data.black()), atol=0, rtol=0)


@pytest.mark.parametrize("method, alphas_move", [("saliency", False), ("gradcam", True)])
def test_the_saliency_term_trains_the_student_and_not_the_teacher(
        method, alphas_move, small_trial_config, trained_seed_cnn, fashion_small):
    data, teacher = fashion_small, copy.deepcopy(trained_seed_cnn)  # trained FP, 4-bit student
    student = load_fp_weights(build_model(small_trial_config), teacher.state_dict()).eval()
    calibrate_alphas(student, data.train_x[:512], "percentile")  # as QAT starts: some clip
    step = Distillation(Teacher(teacher, method, "teacher_top1", data.black()), kd_weight=0.0,
                        temperature=4.0, saliency_weight=1.0, saliency_loss="cosine",
                        input_noise=0.0)
    step.teacher.precompute(data.train_x, data.train_y, with_maps=True)
    x, y = data.train_x[:64], data.train_y[:64]
    # eval mode (no dropout): the step's loss minus the same forward's cross-entropy
    term = (step.loss(student, x, y, slice(0, 64), None)
            - torch.nn.functional.cross_entropy(student(x), y))
    weights, alphas = weight_parameters(student), alpha_parameters(student)
    grads = torch.autograd.grad(term, weights + alphas, allow_unused=True)

    def size(gs):
        return sum(float(g.abs().sum()) for g in gs if g is not None)
    assert term.item() > 0 and size(grads[:len(weights)]) > 0
    # input-gradient maps through straight-through masks do not depend on alpha (its
    # derivative is zero almost everywhere); Grad-CAM's feature map does
    assert (size(grads[len(weights):]) > 0) == alphas_move
    assert all(p.grad is None for p in teacher.parameters())


def test_a_distilled_trial_continues_from_its_checkpoint_exactly(tmp_path):
    config = parse_trial_config({**SMALL, "fp": {"epochs": 1}, "qat": {
        "epochs": 2, "distill": {"kd_weight": 1.0, "saliency_weight": 3.0,
                                 "input_noise": 0.1}},
        "precision": {"default": {"weight_bits": 2, "act_bits": 2}}, "controls": False})
    checkpoints = []
    whole = run_trial(config, cache_dir=tmp_path,
                      report=lambda epoch, metrics, ckpt: checkpoints.append(ckpt))
    continued = run_trial(config, cache_dir=tmp_path, checkpoint=checkpoints[0])
    for name in ("accuracy", "loss", "fidelity_spearman", "deletion_auc"):
        assert continued.metrics[name] == whole.metrics[name], name


def test_distillation_config_errors():
    with pytest.raises(ConfigError, match=r"trial.qat.distill.saliency_weight: 1.0 trains "
                                          r"through the student's maps, and smoothgrad has no "
                                          r"gradient path"):
        parse_trial_config({"qat": {"distill": {"saliency_weight": 1.0}},
                            "saliency": {"method": "smoothgrad"}})
    for bad, where in (({"kd_weight": -1.0}, "kd_weight"), ({"temperature": 0.0}, "temperature"),
                       ({"input_noise": -0.5}, "input_noise"), ({"lambda": 1.0}, "lambda")):
        with pytest.raises(ConfigError, match=rf"trial.qat.distill.{where}"):
            parse_trial_config({"qat": {"distill": bad}})
