"""The from-scratch ViT: shapes, tokens, weight import (torchvision, timm), export."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from vitedge import checkpoints
from vitedge.model import PRESETS, ViTConfig, VisionTransformer, create_model, flops_per_image


def test_presets_build_and_shapes():
    for name in ("vit-micro-48", "vit-tiny-48"):
        m = create_model(name).eval()
        assert m(torch.randn(3, 1, 48, 48)).shape == (3, 7)
    assert 2.5e6 < create_model("vit-tiny-48").num_params() < 3.0e6
    assert set(PRESETS) >= {"vit-ti-16", "vit-s-16", "vit-b-16"}


def test_config_rejects_bad_geometry():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(img_size=50, patch_size=4)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ViTConfig(embed_dim=100, num_heads=3)


def test_distillation_token_train_vs_eval():
    m = create_model("vit-micro-48", distilled=True)
    x = torch.randn(2, 1, 48, 48)
    m.train()
    cls, dist = m(x)
    m.eval()
    with torch.no_grad():
        cls, dist = (h(m.forward_features(x)[:, i]) for i, h in enumerate((m.head, m.head_dist)))
        torch.testing.assert_close(m(x), (cls + dist) / 2)
    assert m.pos_embed.shape[1] == m.cfg.num_patches + 2


def test_position_matters():
    """Permuting patches must change the output: the position embedding is used."""
    torch.manual_seed(0)
    m = create_model("vit-micro-48").eval()
    x = torch.randn(1, 1, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(m(x), m(torch.flip(x, dims=[3])), atol=1e-4)


@pytest.mark.parametrize("image_size", [224, 64])
def test_torchvision_equivalence(image_size):
    torch.manual_seed(0)
    tv = torchvision.models.vit_b_16(image_size=image_size).eval()
    # random init leaves torchvision's head at zero: give it weights so logits are informative
    torch.nn.init.normal_(tv.heads.head.weight, std=0.02)
    m = checkpoints.load_torchvision(tv).eval()
    x = torch.randn(2, 3, image_size, image_size)
    with torch.no_grad():
        ref, out = tv(x), m(x)
    assert ref.abs().max() > 1e-3
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)


def _small_tv_vit(image_size=64):
    from torchvision.models.vision_transformer import VisionTransformer as TVViT

    return TVViT(image_size=image_size, patch_size=16, num_layers=2, num_heads=2, hidden_dim=128, mlp_dim=256).eval()


def test_torchvision_import_adapts_size_channels_head():
    torch.manual_seed(0)
    tv = _small_tv_vit()
    small = dict(patch_size=16, embed_dim=128, depth=2, num_heads=2, mlp_ratio=2.0)
    target = create_model("vit-b-16", img_size=48, in_chans=1, num_classes=7, **small)
    m = checkpoints.load_torchvision(tv.state_dict(), target).eval()
    assert m.pos_embed.shape == (1, 1 + 9, 128)
    assert m.patch_embed.proj.weight.shape == (128, 1, 16, 16)
    torch.testing.assert_close(m.patch_embed.proj.weight, tv.conv_proj.weight.sum(1, keepdim=True))
    # grayscale folding is exact for a gray image replicated to RGB (same size: no pos-embed resize)
    same = checkpoints.load_torchvision(tv.state_dict(), create_model("vit-b-16", img_size=64, in_chans=1, **small)).eval()
    tv_gray = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(same.forward_features(tv_gray), checkpoints.load_torchvision(tv).eval()
                                   .forward_features(tv_gray.expand(-1, 3, -1, -1)), atol=1e-4, rtol=0)
    assert m(torch.randn(2, 1, 48, 48)).shape == (2, 7)


def test_resize_pos_embed_keeps_prefix_and_is_identity_at_same_size():
    pe = torch.randn(1, 1 + 16, 8)
    torch.testing.assert_close(checkpoints.resize_pos_embed(pe, 4), pe)
    out = checkpoints.resize_pos_embed(pe, 8)
    assert out.shape == (1, 1 + 64, 8)
    torch.testing.assert_close(out[:, :1], pe[:, :1])
    # a constant grid stays constant under bicubic resize
    const = torch.cat([pe[:, :1], torch.ones(1, 16, 8)], 1)
    torch.testing.assert_close(checkpoints.resize_pos_embed(const, 6)[:, 1:], torch.ones(1, 36, 8))
    # adding a distillation token copies the class token's position
    two = checkpoints.resize_pos_embed(pe, 4, 1, 2)
    torch.testing.assert_close(two[:, 1], pe[:, 0])


def test_timm_import_roundtrip_and_resize():
    torch.manual_seed(0)
    src = create_model("vit-ti-16", img_size=64, depth=3).eval()
    state = {k: v.clone() for k, v in src.state_dict().items()}
    same = checkpoints.load_timm(state).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(same(x), src(x))
    small = checkpoints.load_timm(state, create_model("vit-ti-16", img_size=48, in_chans=1, num_classes=7,
                                                       distilled=True, depth=3))
    assert small.pos_embed.shape == (1, 2 + 9, 192)
    with pytest.raises(ValueError, match="patch size"):
        checkpoints.load_timm(state, create_model("vit-micro-48"))


def test_save_load_roundtrip_weights_only(tmp_path):
    from vitedge.preprocess import Preprocess

    m = create_model("vit-micro-48", distilled=True).eval()
    p = tmp_path / "m.pt"
    checkpoints.save_model(p, m, Preprocess(), ["a"] * 7, {"note": "x"})
    m2, info = checkpoints.load_model(p)
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m2(x))
    assert info["meta"]["note"] == "x" and len(info["sha256"]) == 64
    assert not list(tmp_path.glob("*.tmp"))  # atomic write left no temp file


def test_load_rejects_pickled_code_and_garbage(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        checkpoints.load_model(bad)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError):
        checkpoints.load_model(junk)
    with pytest.raises(FileNotFoundError):
        checkpoints.load_model(tmp_path / "missing.pt")


def test_torch_export_has_no_graph_breaks():
    m = create_model("vit-micro-48", distilled=True).eval()
    ep = torch.export.export(m, (torch.randn(2, 1, 48, 48),),
                             dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    x = torch.randn(5, 1, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), m(x))


def test_flops_counted():
    m = create_model("vit-micro-48")
    f = flops_per_image(m)
    # dominated by the linear layers: 2 * params * tokens, roughly
    tokens = m.cfg.num_patches + 1
    assert 0.8 * 2 * m.num_params() * tokens < f < 1.6 * 2 * m.num_params() * tokens


# --------------------------------------------------------------------------- hybrid stem and CNN teacher
def test_conv_stem_builds_the_token_grid_and_checks_its_strides():
    from vitedge.model import ConvStem

    m = create_model("hybrid-micro-48", distilled=True)
    assert isinstance(m.patch_embed, ConvStem) and m.cfg.num_patches == 36
    tokens = m.patch_embed(torch.randn(2, 1, 48, 48))
    assert tokens.shape == (2, 36, m.cfg.embed_dim)
    with pytest.raises(ValueError, match="multiply to"):
        create_model("hybrid-micro-48", stem_strides=(2, 2, 1))
    with pytest.raises(ValueError, match="unknown stem"):
        create_model("vit-micro-48", stem="resnet")
    # the default stays the paper's linear patch embedding (imports depend on it)
    assert create_model("vit-micro-48").cfg.stem == "patch"


def test_sequence_pooling_replaces_the_class_token():
    """pool="seq" (CCT): no class token; the head reads a softmax-weighted sum of the patch tokens; a
    distillation token, when present, is the only prefix and feeds the distillation head."""
    torch.manual_seed(0)
    m = create_model("hybrid-micro-48", depth=1, pool="seq").eval()
    assert m.cls_token is None and m.cfg.num_prefix_tokens == 0 and m.pos_embed.shape[1] == 36
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        feats = m.forward_features(x)
        assert feats.shape == (3, 36, m.cfg.embed_dim)
        w = torch.softmax(m.attn_pool(feats), dim=1)
        torch.testing.assert_close(m(x), m.head((w * feats).sum(dim=1)))
        # the pooling is learned, not a plain mean: its scores move the output
        mean_pooled = m.head(feats.mean(dim=1))
        m.attn_pool.weight.normal_(std=1.0)
        assert not torch.allclose(m(x), mean_pooled, atol=1e-4)

    d = create_model("hybrid-micro-48", depth=1, pool="seq", distilled=True)
    assert d.cfg.num_prefix_tokens == 1 and d.pos_embed.shape[1] == 37
    d.train()
    assert [t.shape for t in d(x)] == [(3, 7), (3, 7)]  # class and distillation logits, for the loss
    d.eval()
    with torch.no_grad():
        feats = d.forward_features(x)
        torch.testing.assert_close(d(x), (d.head(d.pooled(feats)) + d.head_dist(feats[:, 0])) / 2)
        assert d.pooled(feats).shape == (3, d.cfg.embed_dim)
    with pytest.raises(ValueError, match="unknown pool"):
        create_model("vit-micro-48", pool="mean")
    assert create_model("vit-micro-48").cfg.pool == "cls"  # the paper's, and what imports need


def test_class_token_weights_import_into_a_sequence_pooled_model():
    """A timm-named checkpoint (class token, optionally a distillation token) loads into pool="seq":
    the class token and its position are dropped, patch positions and blocks carry over."""
    torch.manual_seed(0)
    for src_distilled in (False, True):
        src = create_model("vit-micro-48", distilled=src_distilled)
        state = src.state_dict()
        for dst_distilled in (False, True):
            dst = create_model("vit-micro-48", pool="seq", distilled=dst_distilled)
            checkpoints.load_timm(state, model=dst)
            n = 1 + int(src_distilled)
            torch.testing.assert_close(dst.pos_embed[:, dst.cfg.num_prefix_tokens:], src.pos_embed[:, n:])
            torch.testing.assert_close(dst.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
            if dst_distilled:  # the source's distillation token, else its class token, seeds it
                want = src.dist_token if src_distilled else src.cls_token
                torch.testing.assert_close(dst.dist_token, want)
                torch.testing.assert_close(dst.pos_embed[:, :1], src.pos_embed[:, n - 1:n])


def test_fold_batchnorm_is_exact_and_refuses_training_mode():
    from vitedge.model import fold_batchnorm

    torch.manual_seed(0)
    m = create_model("hybrid-micro-48", depth=1).train()
    with torch.no_grad():
        m(torch.randn(64, 1, 48, 48) * 2 + 1)  # move the running statistics away from identity
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(m)
    m.eval()
    x = torch.randn(3, 1, 48, 48)
    with torch.no_grad():
        before = m(x)
        fold_batchnorm(m)
        after = m(x)
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert torch.allclose(before, after, atol=1e-5)


def test_cnn_teacher_builds_saves_and_loads(tmp_path):
    from vitedge.checkpoints import load_model, save_model
    from vitedge.cnn import FaceCNN
    from vitedge.data import CLASSES
    from vitedge.preprocess import Preprocess

    torch.manual_seed(0)
    m = create_model("cnn-small-48").eval()
    assert isinstance(m, FaceCNN) and m.cfg.arch == "cnn"
    assert m(torch.randn(2, 1, 48, 48)).shape == (2, 7)
    save_model(tmp_path / "t.pt", m, Preprocess(), list(CLASSES))
    back, info = load_model(tmp_path / "t.pt")
    assert isinstance(back, FaceCNN) and info["config"]["arch"] == "cnn"
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        assert torch.equal(back(x), m(x))
    with pytest.raises(ValueError, match="CNNConfig: unknown key"):
        create_model({"arch": "cnn", "widths": [8], "depths": [1], "patch_size": 4})


def test_cnn_checkpoint_warm_starts_a_cnn(tmp_path):
    """`--init` with a CNN teacher's checkpoint (continuing its training): the stored config may hold
    tuples (older checkpoints) or lists; either is the same model. Another CNN shape is refused."""
    from vitedge.checkpoints import save_model
    from vitedge.data import CLASSES
    from vitedge.torch_io import load_torch, save_torch
    from vitedge.preprocess import Preprocess

    torch.manual_seed(0)
    src = create_model("cnn-tiny-48").eval()
    save_model(tmp_path / "t.pt", src, Preprocess(), list(CLASSES))
    ckpt = load_torch(tmp_path / "t.pt")
    ckpt["config"] = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()}
    save_torch(ckpt, tmp_path / "tuples.pt")
    x = torch.randn(2, 1, 48, 48)
    for name in ("t.pt", "tuples.pt"):
        dst = checkpoints.import_pretrained(tmp_path / name, create_model("cnn-tiny-48")).eval()
        with torch.no_grad():
            assert torch.equal(dst(x), src(x))
    with pytest.raises(ValueError, match="weights for another model"):
        checkpoints.import_pretrained(tmp_path / "t.pt", create_model("cnn-small-48"))


def test_model_spec_arch_must_match_the_preset():
    import argparse

    from vitedge.stages import resolve
    from vitedge.engine import TrainConfig

    def spec(model_json):
        ns = argparse.Namespace(model_json=model_json, train_json="{}", preset=None, epochs=None, batch_size=None,
                                lr=None, seed=None, work_dir=None, out=Path("m.pt"))
        return resolve(ns, TrainConfig)

    assert spec('{"arch": "cnn", "preset": "cnn-tiny-48"}').model_spec["preset"] == "cnn-tiny-48"
    with pytest.raises(ValueError, match="does not match arch"):
        spec('{"arch": "vit", "preset": "cnn-tiny-48"}')
    with pytest.raises(ValueError, match="does not match arch"):
        spec('{"arch": "cnn", "preset": "hybrid-micro-48"}')


def test_train_config_rejects_unknown_keys():
    from vitedge.engine import TrainConfig

    with pytest.raises(ValueError, match="epocs"):
        TrainConfig.from_dict({"epocs": 50})
