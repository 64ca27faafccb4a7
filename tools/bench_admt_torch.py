"""The official AD-MT training step (ZhenZHAO/AD-MT at 03ef84c), for tools/bench_torch.py's
`admt3d` / `admt2d` rows. See /work/shared/design/ADMT.md for what the step computes.

Nothing of the official code is copied into this repository: it is imported from a checkout
of the repository's `code/` folder named by `--admt-code DIR` (or `ADMT_CODE`), e.g.

    mkdir -p /tmp/admt
    git --git-dir=/work/.mirror/ZhenZHAO+AD-MT/repo archive HEAD code | tar -x -C /tmp/admt
    python3 tools/bench_torch.py --admt-code /tmp/admt/code admt3d admt2d

(tools/stage_gpu.sh stages it as .gl/admt/code for the GPU machine). Used from it, unmodified:

* networks.net_factory.net_factory: the student and both teachers ("vnet": VNet(1, 2,
  batchnorm, dropout); "unet": UNet(1, 4)), created student, teacher 1, teacher 2 in that order
  and the teachers' parameters detached, as the scripts' create_model does;
* utils.losses.DiceLoss (the supervised Dice and ACDC's unsupervised one; it reads each class's
  Dice back with .item(), a host sync that is part of the official step);
* dataloaders.mixaugs.cut_mix_3d (LA) / cut_mix (ACDC);
* train_utils.AlternateUpdate and get_compromise_pseudo_btw_tea_stu;
* update_ema_variables and get_current_consistency_weight of train_post_3d_aut.py /
  train_post_2d_aut.py. Those scripts import tensorboard, pandas, yaml, tqdm, the datasets and
  the validation code at module level, none of which the step needs, so the two functions are
  taken from the script's source with `ast` and executed unchanged (with the official
  `utils.ramps` in scope).

The step body is the scripts' inline loop body (T3 = train_post_3d_aut.py 184-365, T2 =
train_post_2d_aut.py the same blocks), transcribed in order with the branches the official
configurations take (flag_start_self_learning False, flag_pseudo_from_student False,
conflict weight 1.0): 1) slice the batch (unlabelled first); 2) both teachers under no_grad,
the updated one in train mode, the other in eval mode, softmaxes, argmaxes, conflict map,
entropy-weighted fusion, temperature, max; 3) while teacher 2 is updated a numpy coin then
CutMix of the weak images and the three maps; 4) one student forward over cat(x_l, x_w, x_s),
its own label on the weak view; 5) (CE + Dice) / 2 on the labelled part; 6) the compromise
labels, then masked CE (LA) or masked Dice (ACDC); 7) the ramped weight; 8) zero_grad,
backward, SGD; 9) EMA into the updated teacher, alternation update; 10) the poly LR.
Left out: the `.cuda()` copies of a loader's batch (the batch is already on the device, as in
`ssnet bench`), and the logging (tensorboard, CSV, the meters): its `.item()` calls are one
readback of the logged terms at the end of the step here, as `ssnet bench`'s step does.

The hyper-parameters are the official YAML files' (cfgs/config_3d_la_aut.yml and
cfgs/config_2d_aut.yml; the keys are the scripts' `args` keys).
"""

import ast
import contextlib
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# cfgs/config_3d_la_aut.yml / cfgs/config_2d_aut.yml, the keys the step reads.
CONFIGS = {
    3: {"model": "vnet", "num_classes": 2, "base_lr": 0.01, "max_iterations": 15000, "poly": True,
        "ema_decay": 0.99, "cutmix_prob": 1.0, "flag_ulb_loss_type": "ce", "conf_threshold": 0.8,
        "consistency": 2.0, "consistency_rampup": 40, "alt_flag_conflict_mode": "pixel_confidence",
        "alt_flag_conflict_stu_use_more": False, "alt_param_ensemble_temp": 1.0,
        "alt_flag_updating_period_random": True, "alt_param_updating_period_iters": 19,
        "alt_param_conflict_weight": 1.0, "script": "train_post_3d_aut.py"},
    2: {"model": "unet", "num_classes": 4, "base_lr": 0.01, "max_iterations": 30000, "poly": True,
        "ema_decay": 0.99, "cutmix_prob": 1.0, "flag_ulb_loss_type": "dice", "conf_threshold": 0.95,
        "consistency": 2.0, "consistency_rampup": 50, "alt_flag_conflict_mode": "pixel_confidence",
        "alt_flag_conflict_stu_use_more": False, "alt_param_ensemble_temp": 1.0,
        "alt_flag_updating_period_random": True, "alt_param_updating_period_iters": 50,
        "alt_param_conflict_weight": 1.0, "script": "train_post_2d_aut.py"},
}

OFFICIAL_FILES = ["networks/net_factory.py", "utils/losses.py", "utils/ramps.py",
                  "dataloaders/mixaugs.py", "train_utils.py", "train_post_3d_aut.py",
                  "train_post_2d_aut.py"]


class OfficialCodeError(Exception):
    """The checkout is missing or does not import; the message is one line with the fix."""


def code_dir(path):
    """The official `code/` folder from DIR (the folder itself or a checkout holding it)."""
    if not path:
        raise OfficialCodeError(
            "the AD-MT rows need the official code: pass --admt-code DIR or set ADMT_CODE (DIR = the code/ "
            "folder of github.com/ZhenZHAO/AD-MT, e.g. git --git-dir=/work/.mirror/ZhenZHAO+AD-MT/repo archive "
            "HEAD code | tar -x -C /tmp/admt, then DIR=/tmp/admt/code), or leave admt3d/admt2d out of the rows")
    for d in (path, os.path.join(path, "code")):
        if all(os.path.isfile(os.path.join(d, f)) for f in OFFICIAL_FILES):
            return os.path.abspath(d)
    missing = [f for f in OFFICIAL_FILES if not os.path.isfile(os.path.join(path, f))]
    raise OfficialCodeError("--admt-code %s: not the official AD-MT code/ folder (missing %s); extract it with "
                            "git --git-dir=<AD-MT repo> archive HEAD code | tar -x -C DIR" % (path, ", ".join(missing)))


def _script_functions(path, names, namespace):
    """The functions `names` of the script at `path`, executed from its own source in
    `namespace` (the script's module-level imports are not run)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=path)
    found = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    if sorted(n.name for n in found) != sorted(names):
        raise OfficialCodeError("%s: expected the functions %s, found %s" % (path, names, [n.name for n in found]))
    code = compile(ast.Module(body=found, type_ignores=[]), path, "exec")
    exec(code, namespace)
    return [namespace[n] for n in names]


class Official:
    """The official modules and script functions of one checkout."""

    def __init__(self, path):
        d = code_dir(path)
        if d not in sys.path:
            sys.path.insert(0, d)
        try:
            from networks.net_factory import net_factory
            from utils import losses, ramps
            from dataloaders.mixaugs import cut_mix, cut_mix_3d
            from train_utils import AlternateUpdate, get_compromise_pseudo_btw_tea_stu
            import networks.vnet
            import networks.unet
        except ImportError as e:
            raise OfficialCodeError("importing the official AD-MT code from %s: %s (it needs numpy, scipy and "
                                    "scikit-image beside torch)" % (d, e)) from None
        # The official EMA calls add_(Number, Tensor), deprecated since PyTorch 1.5 and still
        # accepted: its warning is not news.
        warnings.filterwarnings("ignore", message="This overload of add_ is deprecated", category=UserWarning)
        self.dir = d
        self.net_factory = net_factory
        self.losses = losses
        self.cut_mix = {2: cut_mix, 3: cut_mix_3d}
        self.AlternateUpdate = AlternateUpdate
        self.get_compromise_pseudo_btw_tea_stu = get_compromise_pseudo_btw_tea_stu
        self.net_classes = {"vnet": (networks.vnet.VNet, dict(n_channels=1, n_classes=2, normalization="batchnorm",
                                                               has_dropout=True)),
                            "unet": (networks.unet.UNet, dict(in_chns=1, class_num=4))}
        self.script = {}
        for dim, cfg in CONFIGS.items():
            ns = {"ramps": ramps, "torch": torch}
            self.script[dim] = dict(zip(
                ("get_current_consistency_weight", "update_ema_variables"),
                _script_functions(os.path.join(d, cfg["script"]),
                                  ["get_current_consistency_weight", "update_ema_variables"], ns)))


@contextlib.contextmanager
def _modules_stay_on_the_cpu(device):
    """net_factory hard-codes `.cuda()`; on the CPU (smoke tests) it is a no-op while the
    networks are built. On a CUDA device nothing changes (net_factory puts them on the current
    device, which bench_torch.py has set)."""
    if device.type == "cuda":
        yield
        return
    cuda = nn.Module.cuda
    nn.Module.cuda = lambda self, *a, **k: self
    try:
        yield
    finally:
        nn.Module.cuda = cuda


class AdmtStep:
    """The official state (three networks, SGD, losses, the alternation, iter_num) and one
    training step on a fixed synthetic batch."""

    def __init__(self, official, dim, weak, strong, label, labeled_bs, device):
        self.o, self.dim, self.device = official, dim, device
        self.args = args = dict(CONFIGS[dim])
        args["labeled_bs"] = labeled_bs
        self.batch = (weak, strong, label)

        def create_model(ema=False):                     # T3:66-74
            with _modules_stay_on_the_cpu(device):
                net = official.net_factory(net_type=args["model"], in_chns=1, class_num=args["num_classes"])
            model = net.to(device)
            if ema:
                for param in model.parameters():
                    param.detach_()
            return model

        self.model = create_model()                      # T3:85-90
        self.ema_model = create_model(ema=True)
        self.ema_model_another = create_model(ema=True)
        self.model.train()
        self.ema_model.train()
        self.ema_model_another.train()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=args["base_lr"],   # T3:128-131
                                         momentum=0.9, weight_decay=0.0001)
        self.ce_loss = nn.CrossEntropyLoss()
        self.dice_loss = official.losses.DiceLoss(args["num_classes"])
        self.alternate_indicator = official.AlternateUpdate(         # T3:154-156
            args["alt_param_updating_period_iters"], initial_flag=True,
            flag_random=args["alt_flag_updating_period_random"])
        self.iter_num = 0
        self.get_current_consistency_weight = official.script[dim]["get_current_consistency_weight"]
        self.update_ema_variables = official.script[dim]["update_ema_variables"]

    def step(self):
        """One iteration of the official loop body; returns the logged terms (one readback)."""
        args, dev = self.args, self.device
        model, ema_model, ema_model_another = self.model, self.ema_model, self.ema_model_another
        alternate_indicator, dice_loss = self.alternate_indicator, self.dice_loss
        weak_batch, strong_batch, label_batch = self.batch
        batch_size = weak_batch.shape[0]
        alt_param_ensemble_temp = args["alt_param_ensemble_temp"]
        alt_flag_conflict_mode = args["alt_flag_conflict_mode"]
        alt_flag_conflict_stu_use_more = args["alt_flag_conflict_stu_use_more"]
        var_param_conflict_weight = args["alt_param_conflict_weight"]
        if var_param_conflict_weight != 1.0:
            raise ValueError("only the official conflict weight 1.0 is transcribed")

        # 1) get augmented data (already on the device)
        num_lb = args["labeled_bs"]
        num_ulb = batch_size - num_lb
        img_lb_w, target_lb = weak_batch[num_ulb:], label_batch[num_ulb:]
        img_ulb_w, img_ulb_s = weak_batch[:num_ulb], strong_batch[:num_ulb]

        # 2) getting pseudo labels
        loss_ulb_consist, loss_ulb_conflict = torch.tensor(0.0).to(dev), torch.tensor(0.0).to(dev)
        with torch.no_grad():
            if alternate_indicator.get_alternate_state():
                ema_model.train()
                ema_model_another.eval()
            else:
                ema_model_another.train()
                ema_model.eval()
            ema_outputs_soft_1 = torch.softmax(ema_model(img_ulb_w), dim=1)
            ema_outputs_soft_1 = ema_outputs_soft_1.detach()
            ema_outputs_soft_2 = torch.softmax(ema_model_another(img_ulb_w), dim=1)
            ema_outputs_soft_2 = ema_outputs_soft_2.detach()
            _, pseudo_outputs_1 = torch.max(ema_outputs_soft_1, dim=1)
            _, pseudo_outputs_2 = torch.max(ema_outputs_soft_2, dim=1)
            mtx_bool_conflict = pseudo_outputs_1 != pseudo_outputs_2
            conflict_ratio = mtx_bool_conflict.float().sum() / num_ulb
            entropy_1 = -torch.sum(ema_outputs_soft_1 * torch.log2(ema_outputs_soft_1 + 1e-10), dim=1)
            entropy_2 = -torch.sum(ema_outputs_soft_2 * torch.log2(ema_outputs_soft_2 + 1e-10), dim=1)
            weights_1 = torch.exp(-entropy_1) / (torch.exp(-entropy_1) + torch.exp(-entropy_2))
            weights_2 = 1 - weights_1
            weighted_outputs = (weights_1.unsqueeze(1) * ema_outputs_soft_1
                                + weights_2.unsqueeze(1) * ema_outputs_soft_2)
            weighted_outputs = torch.pow(weighted_outputs, 1.0 / alt_param_ensemble_temp)
            weighted_outputs = weighted_outputs / torch.sum(weighted_outputs, dim=1, keepdim=True)
            pseudo_logits, pseudo_outputs = torch.max(weighted_outputs, dim=1)
            del ema_outputs_soft_1, pseudo_outputs_1, ema_outputs_soft_2, pseudo_outputs_2, weighted_outputs
            del entropy_1, entropy_2

        # 3) apply cutmix (while teacher 2 is updated)
        if alternate_indicator.get_alternate_state() == False:  # noqa: E712 (the official test)
            del img_ulb_s
            if np.random.random() < args.get("cutmix_prob", 1.0):
                img_ulb_s, pseudo_outputs, pseudo_logits, mtx_bool_conflict = self.o.cut_mix[self.dim](
                    img_ulb_w, pseudo_outputs, pseudo_logits, mtx_bool_conflict)
                conflict_ratio = mtx_bool_conflict.float().sum() / num_ulb
            else:
                img_ulb_s = img_ulb_w.clone()

        # 4) forward
        img = torch.cat((img_lb_w, img_ulb_w, img_ulb_s))
        pred = model(img)
        pred_lb = pred[:args["labeled_bs"]]
        pred_ulb_w, pred_ulb_s = pred[args["labeled_bs"]:].chunk(2)
        with torch.no_grad():
            pseudo_logits_stu, pseudo_outputs_stu = torch.max(torch.softmax(pred_ulb_w.detach(), dim=1), dim=1)

        # 5) supervised loss
        loss_lb = (self.ce_loss(pred_lb, target_lb.long())
                   + dice_loss(torch.softmax(pred_lb, dim=1), target_lb.unsqueeze(1).float(),
                               ignore=torch.zeros_like(target_lb).float())) / 2.0

        # 6) unsupervised loss (conflict weight 1.0: the plain masked loss)
        pseudo_mask = pseudo_logits.ge(args["conf_threshold"]).bool()
        high_ratio = pseudo_mask.float().mean()
        pseudo_outputs, pseudo_logits, _ = self.o.get_compromise_pseudo_btw_tea_stu(
            pseudo_outputs, pseudo_logits, pseudo_outputs_stu, pseudo_logits_stu, alt_flag_conflict_mode,
            None if alt_flag_conflict_stu_use_more else mtx_bool_conflict)
        if args["flag_ulb_loss_type"] == "ce":
            pseudo_mask = pseudo_logits.ge(args["conf_threshold"]).bool()
            pseudo_outputs[~pseudo_mask] = -100
            loss_ulb = F.cross_entropy(pred_ulb_s, pseudo_outputs.long(), ignore_index=-100, reduction="mean")
        else:
            loss_ulb = dice_loss(torch.softmax(pred_ulb_s, dim=1), pseudo_outputs.unsqueeze(1).float(),
                                 ignore=(pseudo_logits < args["conf_threshold"]).float())

        # 7) total loss
        consistency_weight = self.get_current_consistency_weight(self.iter_num // 150, args)
        loss = loss_lb + consistency_weight * loss_ulb

        # 8) update student model
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

        # 9) update teacher model
        if alternate_indicator.get_alternate_state():
            self.update_ema_variables(model, ema_model, args["ema_decay"], self.iter_num // 2, args)
        else:
            self.update_ema_variables(model, ema_model_another, args["ema_decay"], self.iter_num // 2, args)
        alternate_indicator.update()

        # 10) update learning rate
        lr_ = args["base_lr"] * (1.0 - self.iter_num / args["max_iterations"]) ** 0.9
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr_
        self.iter_num = self.iter_num + 1

        # 11) the logged terms, read back once
        vals = torch.stack([loss.detach(), loss_lb.detach(), loss_ulb.detach(), loss_ulb_conflict,
                            loss_ulb_consist, high_ratio, conflict_ratio.float()]).tolist()
        return dict(zip(("loss", "loss_lb", "loss_ulb", "loss_ulb_conflict", "loss_ulb_consist", "high_ratio",
                         "conflict_ratio"), vals))
