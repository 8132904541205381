"""SAGE model on the tiny CLIP: every switch trains, freezing holds, prompts enter where they should."""

from __future__ import annotations

import pytest
import torch

from sage_model.clip import build_clip, build_tiny_clip, encode_texts, tokenizer
from sage_model.config import (
    AdapterConfig,
    ModelConfig,
    PromptConfig,
    SemanticConfig,
    SpatioTemporalConfig,
)
from sage_model.data.vocab import Vocabulary
from sage_model.model.losses import knowledge_loss
from sage_model.model.prompts import ClassAwarePrompt, ImageCondPrompt, LayerwiseTextEncoder
from sage_model.model.sage import SageModel, build_model
from sage_model.model.spatiotemporal import TokenwiseStandIn, transformer
from sage_model.train.trainer import TrainingVocabulary, batch_loss

VOCAB = Vocabulary(
    dataset="vidvrd",
    base_objects=("person", "dog", "car"),
    novel_objects=("bear",),
    base_predicates=("ride", "chase", "next_to", "sit_behind"),
    novel_predicates=("watch", "fly_above"),
)
TRAIN_VOCAB = TrainingVocabulary.from_counts(4, 3, 4)
B, T, D = 5, 3, 48  # D != 64: the store width is projected to CLIP's embed dim


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip():
    return build_tiny_clip()


def make_batch(seed: int = 0, batch: int = B) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    corners = torch.rand(batch, T, 2, 2, 2, generator=g).sort(dim=2).values  # x1 < x2, y1 < y2
    boxes = corners.permute(0, 1, 2, 4, 3).reshape(batch, T, 2, 4)[..., [0, 2, 1, 3]]
    labels = (torch.rand(batch, 6, generator=g) < 0.4).to(torch.uint8)
    return {
        "visual": torch.randn(batch, T, 4, D, generator=g).half(),
        "boxes": boxes,
        "teacher": torch.randn(batch, T, 4, 32, generator=g).half(),
        "labels": labels,
        "subject_class": torch.tensor([0, 1, 2, 3, -1][:batch] * (batch // 5 + 1))[:batch].to(torch.int16),
        "object_class": torch.tensor([2, 0, 3, 1, 0][:batch] * (batch // 5 + 1))[:batch].to(torch.int16),
    }


def build(clip, **blocks) -> SageModel:
    torch.manual_seed(0)
    return build_model(ModelConfig(**blocks), VOCAB, D, teacher_dim=32, frames=T, clip=clip)


SWITCHES = [
    {},
    {"semantic": SemanticConfig(fusion="sum")},
    {"semantic": SemanticConfig(fusion="concat")},
    {"semantic": SemanticConfig(fusion="gated")},
    {"semantic": SemanticConfig(fusion="none")},
    {"spatio_temporal": SpatioTemporalConfig(spatial="linear")},
    {"spatio_temporal": SpatioTemporalConfig(temporal="linear", blocks=2)},
    {"prompt": PromptConfig(strategy="image_cond")},
    {"prompt": PromptConfig(strategy="none")},
    {"prompt": PromptConfig(init="fixed")},
    {"prompt": PromptConfig(init="learnable", insertion="replace", n_class_tokens=6)},
    {"prompt": PromptConfig(init="random", class_position=0, insert_layer=11, tke_bottleneck=32)},
    {"prompt": PromptConfig(insertion="replace", insert_layer=1, n_class_tokens=4)},
    {"adapters": AdapterConfig(visual=False, text=False)},
    {"hidden_dim": 32},
]


@pytest.mark.parametrize("switch", SWITCHES, ids=lambda s: repr(s)[:60])
def test_every_switch_runs_forward_and_backward_in_both_stages(clip, switch):
    model = build(clip, **switch)
    for stage in (1, 2):
        model.set_stage(stage)
        if not model.stage_parameters():
            assert stage == 2 and switch.get("adapters") is not None or stage == 2
            continue
        model.train()
        model.zero_grad(set_to_none=True)
        terms = batch_loss(model, make_batch(), TRAIN_VOCAB)
        assert torch.isfinite(terms.total)
        terms.total.backward()
        grads = [p.grad for p in model.stage_parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in grads), f"stage {stage}: no gradient"


def _snapshot(model: SageModel) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.named_parameters()}


@pytest.mark.parametrize("strategy", ["class_aware", "image_cond"])
def test_frozen_parameters_get_no_gradient_and_do_not_change(clip, strategy):
    model = build(clip, prompt=PromptConfig(strategy=strategy))
    for stage in (1, 2):
        model.set_stage(stage)
        model.train()
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert not any(n.startswith("text_encoder.") for n in trainable)
        visual = {
            n
            for n, _ in model.named_parameters()
            if n.split(".")[0]
            in {
                "visual_in",
                "semantic",
                "spatio_temporal",
                "interaction",
                "object_proj",
                "relation_proj",
                "teacher_in",
            }
        }
        assert (trainable <= visual) if stage == 1 else not (trainable & visual)
        before = _snapshot(model)
        optimizer = torch.optim.AdamW(model.stage_parameters(), lr=1e-2)
        terms = batch_loss(model, make_batch(stage), TRAIN_VOCAB)
        terms.total.backward()
        optimizer.step()
        for name, param in model.named_parameters():
            if name in trainable:
                continue
            assert param.grad is None, f"stage {stage}: frozen {name} got a gradient"
            assert torch.equal(param, before[name]), f"stage {stage}: frozen {name} changed"
        assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in trainable)
        model.zero_grad(set_to_none=True)


def test_stage_two_visual_features_do_not_depend_on_dropout(clip):
    model = build(clip)
    model.set_stage(2)
    model.train()
    batch = make_batch()
    with torch.no_grad():
        first, _ = model.encode_pairs(batch)
        second, _ = model.encode_pairs(batch)
    assert torch.equal(first, second)


def test_text_path_without_prompts_equals_open_clip_encode_text(clip):
    encoder = LayerwiseTextEncoder(clip)
    tokens = tokenizer()(
        ["a video of two objects that sit behind.", "ride", "two entities in video sequence"]
    )
    with torch.no_grad():
        ours = encoder.encode_ids(tokens)
        theirs = clip.encode_text(tokens)
        short = encoder.encode_ids(tokens[:, :12])  # padding cut after the longest [EOS]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(short, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layer", [1, 6, 11])
@pytest.mark.parametrize("insertion", ["append", "replace"])
def test_prompts_inserted_at_layer_l_leave_lower_layers_untouched(clip, layer, insertion):
    model = build(clip, prompt=PromptConfig(insert_layer=layer, insertion=insertion))
    prompt = model.prompt
    assert isinstance(prompt, ClassAwarePrompt)
    encoder = model.text_encoder
    classes = torch.arange(len(VOCAB.predicates))
    outputs: list[torch.Tensor] = []
    hooks = [
        b.register_forward_hook(lambda _m, _i, out: outputs.append(out.detach())) for b in encoder.blocks
    ]
    with torch.no_grad():
        prompt(encoder, classes)
        with_tke = list(outputs)
        outputs.clear()
        x = encoder.add_positions(prompt.context.assemble(classes, prompt.context.vectors))
        encoder.run_blocks(x, 0, encoder.n_layers)
        plain = list(outputs)
    for h in hooks:
        h.remove()
    for i in range(layer):
        assert torch.equal(with_tke[i], plain[i]), f"layer {i + 1} <= l={layer} changed"
    last_eos = prompt.context.eos_index + (prompt.tke.n_tokens if insertion == "append" else 0)
    rows = torch.arange(len(classes))
    assert not torch.allclose(with_tke[-1][rows, last_eos], plain[-1][rows, prompt.context.eos_index])


def test_append_puts_class_tokens_before_eos_so_they_reach_the_classifier(clip):
    model = build(clip)
    model.set_stage(2)
    model.eval()
    classes = torch.arange(len(VOCAB.predicates))
    with torch.no_grad():
        before = model.classifier(classes)
        model.prompt.tke.up.bias.add_(0.5)
        model.train()  # clears the cache
        model.eval()
        after = model.classifier(classes)
    assert not torch.allclose(before, after)


def test_knowledge_loss_is_zero_when_the_classifier_equals_w_clip(clip):
    """Stage 1 classifies with W_clip itself; a random classifier is far from it."""
    model = build(clip)
    model.set_stage(1)
    out = model(make_batch(), TRAIN_VOCAB.base_predicates, TRAIN_VOCAB.base_objects)
    torch.testing.assert_close(out.classifier, out.knowledge)
    assert float(knowledge_loss(out.classifier, out.knowledge)) == pytest.approx(0.0, abs=1e-6)
    other = torch.nn.functional.normalize(torch.randn_like(out.knowledge), dim=-1)
    assert float(knowledge_loss(other, out.knowledge)) > 0.5


def _count_text_sequences(model: SageModel) -> list[int]:
    seen: list[int] = []
    model.text_encoder.blocks[0].register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    return seen


def test_class_aware_classifier_is_computed_once_per_vocabulary_at_inference(clip):
    model = build(clip)
    model.set_stage(2)
    model.eval()
    seen = _count_text_sequences(model)
    classes = torch.arange(len(VOCAB.predicates))
    objects = torch.arange(len(VOCAB.objects))
    with torch.no_grad():
        first = model(make_batch(0, 5), classes, objects).rel_logits
        model(make_batch(1, 40), classes, objects)
        again = model(make_batch(0, 5), classes, objects).rel_logits
    assert seen == [len(classes)]  # one pass for the vocabulary, none per pair
    torch.testing.assert_close(first, again)


def test_image_cond_needs_a_text_pass_per_instance(clip):
    model = build(clip, prompt=PromptConfig(strategy="image_cond"))
    assert isinstance(model.prompt, ImageCondPrompt)
    model.set_stage(2)
    model.eval()
    seen: list[int] = []
    model.text_encoder.blocks[0].mlp.register_forward_hook(lambda _m, inp, _o: seen.append(inp[0].shape[0]))
    classes = torch.arange(len(VOCAB.predicates))
    with torch.no_grad():
        out = model(make_batch(0, 10), classes, torch.arange(4))
    assert sum(seen) == 10 + 10 * len(classes)  # per pair: its shared prefix once, then every class
    assert out.classifier.shape == (10, len(classes), 64)
    assert not torch.allclose(out.classifier[0], out.classifier[1])  # each instance its own classifier


@pytest.mark.parametrize("init,position", [("domain_specific", 6), ("random", 0), ("learnable", 0)])
def test_image_cond_shared_prefix_equals_whole_prompts_and_their_gradients(clip, init, position):
    """The per-pair prefix computed once gives the classifier (and gradients) of running every
    class prompt whole, as CoCoOp does."""
    model = build(clip, prompt=PromptConfig(strategy="image_cond", init=init, class_position=position))
    model.set_stage(2)  # the prompt learns
    prompt, enc = model.prompt, model.text_encoder
    assert isinstance(prompt, ImageCondPrompt)
    classes = torch.arange(len(VOCAB.predicates))
    visual = torch.randn(5, prompt.meta_net[0].in_features)  # (B, V)

    def whole() -> torch.Tensor:
        bias = prompt.meta_net(torch.nn.functional.normalize(visual, dim=-1))
        x = prompt.context.assemble(classes, prompt.context.vectors.unsqueeze(0) + bias.unsqueeze(1))
        b, c, length, width = x.shape
        x = enc.run_blocks(enc.add_positions(x.reshape(b * c, length, width)), 0, enc.n_layers)
        return enc.finish(x, prompt.context.eos_index[classes].repeat(b)).reshape(b, c, -1)

    for compute in (whole, lambda: prompt(enc, classes, visual)):
        prompt.zero_grad()
        out = compute()
        out.square().sum().backward()
        grads = [p.grad.clone() for p in prompt.meta_net.parameters()]
        if compute is whole:
            expected, expected_grads = out.detach(), grads
    torch.testing.assert_close(out.detach(), expected, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected_grads, strict=True):
        # float32 sums in another order: differences scale with the gradient (2e-5 of ~0.1 seen on one CPU)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=max(1e-5, 1e-4 * float(want.abs().max())))


@pytest.mark.parametrize("dim,blocks", [(64, 1), (64, 2), (512, 1), (512, 2)])
def test_linear_stand_in_has_about_the_transformer_parameter_count(dim, blocks):
    ours = sum(p.numel() for p in TokenwiseStandIn(dim, blocks, 0.1).parameters())
    theirs = sum(p.numel() for p in transformer(dim, blocks, 8, 0.1).parameters())
    assert abs(ours - theirs) / theirs < 0.10


def test_vidor_uses_two_blocks_by_default(clip):
    vocab = Vocabulary("vidor", ("adult",), ("pig",), ("watch",), ("kick",))
    model = build_model(ModelConfig(), vocab, 64, teacher_dim=64, frames=3, clip=clip)
    assert len(model.spatio_temporal.spatial[0].layers) == 2
    assert len(build(clip).spatio_temporal.spatial[0].layers) == 1


def test_vitb16_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="model.clip_checkpoint"):
        build_clip("sage_vitb16", None)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_clip("sage_vitb16", tmp_path / "missing.pt")


def test_domain_specific_init_starts_from_the_init_text(clip):
    model = build(clip)
    words = tokenizer().encode("Two entities in video sequence")
    expected = clip.token_embedding(torch.tensor(words))
    torch.testing.assert_close(model.prompt.context.vectors[: len(words)], expected)
    prompt_ids = model.prompt.context.ids[0].tolist()
    name_at = 1 + 6  # SOS + class_position context tokens
    assert prompt_ids[name_at] == tokenizer().encode("ride")[0]


def test_fusion_without_teacher_names_the_setting(clip):
    model = build(clip)
    batch = make_batch()
    batch.pop("teacher")
    with pytest.raises(ValueError, match="model.semantic.fusion"):
        model(batch, TRAIN_VOCAB.base_predicates, TRAIN_VOCAB.base_objects)


def test_without_class_enhancement_the_classifier_is_the_handcrafted_template(clip):
    model = build(
        clip, prompt=PromptConfig(strategy="none"), adapters=AdapterConfig(visual=False, text=False)
    )
    classes = TRAIN_VOCAB.base_predicates
    sentence = tokenizer()(["a video of two objects that ride."])
    expected = torch.nn.functional.normalize(clip.encode_text(sentence), dim=-1)
    for stage in (1, 2):
        model.set_stage(stage)
        with torch.no_grad():
            torch.testing.assert_close(model.classifier(classes)[:1], expected)
    assert not model.stage_parameters()  # nothing to train in stage 2


def test_text_tower_in_slices_equals_one_pass_and_passes_gradients(clip):
    enc = LayerwiseTextEncoder(clip)
    x = torch.randn(70, 9, enc.width, requires_grad=True)  # (N, L, W)
    whole = enc.run_blocks(x, 0, enc.n_layers)
    sliced = enc.run_blocks_in_slices(x, 0, enc.n_layers, rows=16)  # 5 slices, the last of 6
    torch.testing.assert_close(sliced, whole)
    (grad_sliced,) = torch.autograd.grad(sliced.sum(), x)
    (grad_whole,) = torch.autograd.grad(whole.sum(), x)
    torch.testing.assert_close(grad_sliced, grad_whole)


def test_encode_texts_cuts_the_padding_and_equals_open_clip(clip):
    texts = ["a video of two objects that sit behind.", "ride", "stand next to"]
    with torch.no_grad():
        theirs = clip.encode_text(tokenizer()(texts), normalize=True)  # all 77 positions
    torch.testing.assert_close(encode_texts(clip, texts), theirs, rtol=1e-5, atol=1e-5)
