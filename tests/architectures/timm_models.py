"""Models of huggingface/pytorch-image-models (timm), written with timm's layer code:
ViT (fused and unfused attention), MLP-Mixer, Swin, MobileViT, ResNeSt, GhostNet, HRNet, DLA."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.fx
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import entry

_assert = torch._assert


def to_2tuple(x: int | tuple[int, int]) -> tuple[int, int]:
    return x if isinstance(x, tuple) else (x, x)


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None,
                   round_limit: float = 0.9) -> int:
    """timm layers.helpers.make_divisible."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


# ------------------------------------------------------------------------- timm layers


def drop_path(x: Tensor, drop_prob: float = 0.0, training: bool = False,
              scale_by_keep: bool = True) -> Tensor:
    """timm layers.drop.drop_path (a plain function: the identity in eval)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
    if keep_prob > 0.0 and scale_by_keep:
        random_tensor.div_(keep_prob)
    return x * random_tensor


class DropPath(nn.Module):
    """timm layers.drop.DropPath."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)


class Mlp(nn.Module):
    """timm layers.mlp.Mlp."""

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None, act_layer: Callable[..., nn.Module] = nn.GELU,
                 norm_layer: Callable[..., nn.Module] | None = None, bias: bool = True,
                 drop: float = 0.0, use_conv: bool = False) -> None:
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        linear_layer = partial(nn.Conv2d, kernel_size=1) if use_conv else nn.Linear
        self.fc1 = linear_layer(in_features, hidden_features, bias=bias)
        self.act = act_layer()
        self.drop1 = nn.Dropout(drop)
        self.norm = norm_layer(hidden_features) if norm_layer is not None else nn.Identity()
        self.fc2 = linear_layer(hidden_features, out_features, bias=bias)
        self.drop2 = nn.Dropout(drop)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc1(x)
        x = self.act(x)
        x = self.drop1(x)
        x = self.norm(x)
        x = self.fc2(x)
        x = self.drop2(x)
        return x


class PatchEmbed(nn.Module):
    """timm layers.patch_embed.PatchEmbed (``_assert`` on the image size, NLC or NHWC out)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 embed_dim: int = 768, norm_layer: Callable[..., nn.Module] | None = None,
                 flatten: bool = True, output_fmt: str | None = None) -> None:
        super().__init__()
        self.patch_size = to_2tuple(patch_size)
        self.img_size = to_2tuple(img_size)
        self.grid_size = tuple(s // p for s, p in zip(self.img_size, self.patch_size,
                                                      strict=True))
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        if output_fmt is not None:
            self.flatten = False
            self.output_fmt = output_fmt
        else:
            self.flatten = flatten
            self.output_fmt = "NCHW"
        self.strict_img_size = True
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        if self.img_size is not None:
            if self.strict_img_size:
                _assert(H == self.img_size[0],
                        f"Input height ({H}) doesn't match model ({self.img_size[0]}).")
                _assert(W == self.img_size[1],
                        f"Input width ({W}) doesn't match model ({self.img_size[1]}).")
        x = self.proj(x)
        if self.flatten:
            x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC
        elif self.output_fmt == "NHWC":
            x = x.permute(0, 2, 3, 1)
        x = self.norm(x)
        return x


@torch.fx.wrap
def maybe_add_mask(scores: Tensor, attn_mask: Tensor | None = None) -> Tensor:
    """timm layers.attention.maybe_add_mask (decorated with ``torch.fx.wrap``)."""
    return scores if attn_mask is None else scores + attn_mask


def resolve_self_attn_mask(seq_len: int, attn: Tensor, attn_mask: Tensor | None = None,
                           is_causal: bool = False) -> Tensor | None:
    """timm layers.attention.resolve_self_attn_mask."""
    if is_causal:
        return attn.new_full((seq_len, seq_len), float("-inf")).triu_(1)
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        attn_bias = torch.zeros_like(attn_mask, dtype=attn.dtype)
        attn_bias.masked_fill_(~attn_mask, float("-inf"))
        return attn_bias
    return attn_mask


class Attention(nn.Module):
    """timm layers.attention.Attention: ``forward(x, attn_mask=None, is_causal=False)``,
    ``F.scaled_dot_product_attention`` when ``fused_attn`` else the explicit path."""

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool = False,
                 qk_norm: bool = False, proj_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0, norm_layer: Callable[..., nn.Module] | None = None,
                 fused_attn: bool = True) -> None:
        super().__init__()
        assert dim % num_heads == 0, "dim should be divisible by num_heads"
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.attn_dim = num_heads * self.head_dim
        self.scale = self.head_dim ** -0.5
        self.fused_attn = fused_attn
        self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias)
        self.q_norm = norm_layer(self.head_dim) if qk_norm and norm_layer else nn.Identity()
        self.k_norm = norm_layer(self.head_dim) if qk_norm and norm_layer else nn.Identity()
        self.attn_drop = nn.Dropout(attn_drop)
        self.norm = nn.Identity()
        self.proj = nn.Linear(self.attn_dim, dim, bias=proj_bias)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.fused_attn:
            x = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask,
                dropout_p=self.attn_drop.p if self.training else 0.0, is_causal=is_causal,
            )
        else:
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn_bias = resolve_self_attn_mask(N, attn, attn_mask, is_causal)
            attn = maybe_add_mask(attn, attn_bias)
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
        x = self.norm(x)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class LayerScale(nn.Module):
    """timm layers.layer_scale.LayerScale (``x * self.gamma``)."""

    def __init__(self, dim: int, init_values: float = 1e-5, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x.mul_(self.gamma) if self.inplace else x * self.gamma


class Block(nn.Module):
    """timm vision_transformer.Block: ``forward(x, attn_mask=None, is_causal=False)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, init_values: float | None = None,
                 drop_path: float = 0.0, act_layer: Callable[..., nn.Module] = nn.GELU,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm,
                 fused_attn: bool = True) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=proj_drop, norm_layer=norm_layer, fused_attn=fused_attn)
        self.ls1 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio),
                       act_layer=act_layer, drop=proj_drop)
        self.ls2 = LayerScale(dim, init_values=init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    def forward(self, x: Tensor, attn_mask: Tensor | None = None,
                is_causal: bool = False) -> Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), attn_mask=attn_mask,
                                                   is_causal=is_causal)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


def _global_pool_nlc(x: Tensor, pool_type: str = "token", num_prefix_tokens: int = 1) -> Tensor:
    """timm vision_transformer.global_pool_nlc."""
    if not pool_type:
        return x
    if pool_type == "token":
        x = x[:, 0]
    else:
        x = x[:, num_prefix_tokens:]
        x = x.mean(dim=1) if pool_type == "avg" else x.amax(dim=1)
    return x


class VisionTransformer(nn.Module):
    """huggingface/pytorch-image-models timm/models/vision_transformer.py (class token,
    ``_pos_embed``, ``forward_features(x, attn_mask=None)``, ``forward_head(x,
    pre_logits=False)``)."""

    def __init__(self, img_size: int = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, global_pool: str = "token", embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, init_values: float | None = None,
                 class_token: bool = True, fc_norm: bool | None = None,
                 drop_path_rate: float = 0.0, fused_attn: bool = True) -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        use_fc_norm = global_pool == "avg" if fc_norm is None else fc_norm
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size,
                                      in_chans=in_chans, embed_dim=embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        embed_len = num_patches + self.num_prefix_tokens
        self.pos_embed = nn.Parameter(torch.randn(1, embed_len, embed_dim) * 0.02)
        self.pos_drop = nn.Dropout(p=0.0)
        self.patch_drop = nn.Identity()
        self.norm_pre = nn.Identity()
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.Sequential(*[
            Block(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                  init_values=init_values, drop_path=dpr[i], norm_layer=norm_layer,
                  fused_attn=fused_attn)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim) if not use_fc_norm else nn.Identity()
        self.fc_norm = norm_layer(embed_dim) if use_fc_norm else nn.Identity()
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(self.embed_dim, num_classes)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def _pos_embed(self, x: Tensor) -> Tensor:
        if self.pos_embed is None:
            return x.view(x.shape[0], -1, x.shape[-1])
        pos_embed = self.pos_embed
        to_cat = []
        if self.cls_token is not None:
            to_cat.append(self.cls_token.expand(x.shape[0], -1, -1))
        if to_cat:
            x = torch.cat(to_cat + [x], dim=1)
        x = x + pos_embed
        return self.pos_drop(x)

    def forward_features(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = self.patch_embed(x)
        x = self._pos_embed(x)
        x = self.patch_drop(x)
        x = self.norm_pre(x)
        if attn_mask is not None:
            for blk in self.blocks:
                x = blk(x, attn_mask=attn_mask)
        else:
            x = self.blocks(x)
        x = self.norm(x)
        return x

    def pool(self, x: Tensor, pool_type: str | None = None) -> Tensor:
        return _global_pool_nlc(x, pool_type=pool_type or self.global_pool,
                                num_prefix_tokens=self.num_prefix_tokens)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.pool(x)
        x = self.fc_norm(x)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = self.forward_features(x, attn_mask=attn_mask)
        x = self.forward_head(x)
        return x


@entry("vit_timm", (3, 32, 32), "huggingface/pytorch-image-models timm/models/"
       "vision_transformer.py + timm/layers/attention.py (fused_attn)",
       ("F.scaled_dot_product_attention", "optional forward args (attn_mask=None, "
        "is_causal=False, pre_logits=False)", "qkv reshape/permute/unbind", "x.shape unpacking",
        "torch._assert", "cls token expand + cat", "pos_embed parameter add",
        "LayerScale x * gamma", "DropPath", "layernorm", "gelu", "x[:, 0] token pool"))
def vit_timm() -> nn.Module:
    """timm ViT (vit_tiny-like): 32×32, patch 8, width 16, depth 2, 2 heads, LayerScale 0.1,
    drop path 0.1, fused attention."""
    return VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=16, depth=2,
                             num_heads=2, init_values=0.1, drop_path_rate=0.1, fused_attn=True)


@entry("deit_timm_unfused", (3, 32, 32), "huggingface/pytorch-image-models timm/models/"
       "vision_transformer.py + timm/layers/attention.py (fused_attn False)",
       ("q * scale, q @ k.transpose(-2, -1)", "attn.softmax(dim=-1)", "attn @ v",
        "fx.wrap maybe_add_mask (mask None)", "global_pool avg: x[:, 1:].mean(dim=1)",
        "fc_norm", "optional forward args"))
def deit_timm_unfused() -> nn.Module:
    """timm ViT with the explicit attention path (TIMM_FUSED_ATTN=0): 32×32, patch 8, width 16,
    depth 2, 2 heads, average pooling with fc_norm."""
    return VisionTransformer(img_size=32, patch_size=8, num_classes=10, embed_dim=16, depth=2,
                             num_heads=2, global_pool="avg", fused_attn=False)


# ------------------------------------------------------------------------------ Mixer


class MixerBlock(nn.Module):
    """timm mlp_mixer.MixerBlock: token mixing by transpose + Linear."""

    def __init__(self, dim: int, seq_len: int, mlp_ratio: tuple[float, float] = (0.5, 4.0),
                 norm_layer: Callable[..., nn.Module] = partial(nn.LayerNorm, eps=1e-6),
                 act_layer: Callable[..., nn.Module] = nn.GELU, drop: float = 0.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        tokens_dim, channels_dim = (int(x * dim) for x in mlp_ratio)
        self.norm1 = norm_layer(dim)
        self.mlp_tokens = Mlp(seq_len, tokens_dim, act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp_channels = Mlp(dim, channels_dim, act_layer=act_layer, drop=drop)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
        x = x + self.drop_path(self.mlp_channels(self.norm2(x)))
        return x


class MlpMixer(nn.Module):
    """huggingface/pytorch-image-models timm/models/mlp_mixer.py."""

    def __init__(self, num_classes: int = 1000, img_size: int = 224, in_chans: int = 3,
                 patch_size: int = 16, num_blocks: int = 8, embed_dim: int = 512,
                 mlp_ratio: tuple[float, float] = (0.5, 4.0), drop_path_rate: float = 0.0,
                 global_pool: str = "avg") -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.num_features = self.embed_dim = embed_dim
        self.stem = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                               embed_dim=embed_dim)
        self.blocks = nn.Sequential(*[
            MixerBlock(embed_dim, self.stem.num_patches, mlp_ratio, norm_layer=norm_layer,
                       drop_path=drop_path_rate)
            for _ in range(num_blocks)])
        self.norm = norm_layer(embed_dim)
        self.head_drop = nn.Dropout(0.0)
        self.head = nn.Linear(embed_dim, self.num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.blocks(x)
        x = self.norm(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


@entry("mlp_mixer", (3, 32, 32), "huggingface/pytorch-image-models timm/models/mlp_mixer.py",
       ("token mixing: transpose(1, 2) + Linear over patches", "layernorm", "gelu",
        "x.flatten(2).transpose(1, 2) patch embed", "DropPath", "x.mean(dim=1)",
        "optional arg pre_logits=False"))
def mlp_mixer() -> nn.Module:
    """timm MLP-Mixer: 32×32, patch 8 (16 tokens), width 16, 2 blocks, drop path 0.1."""
    return MlpMixer(num_classes=10, img_size=32, patch_size=8, num_blocks=2, embed_dim=16,
                    drop_path_rate=0.1)


# ------------------------------------------------------------------------------- Swin


def window_partition(x: Tensor, window_size: tuple[int, int]) -> Tensor:
    """timm swin_transformer.window_partition."""
    B, H, W, C = x.shape
    x = x.view(B, H // window_size[0], window_size[0], W // window_size[1], window_size[1], C)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size[0],
                                                            window_size[1], C)
    return windows


def window_reverse(windows: Tensor, window_size: tuple[int, int], H: int, W: int) -> Tensor:
    """timm swin_transformer.window_reverse (``H``, ``W`` come from ``x.shape``)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // window_size[0], W // window_size[1], window_size[0],
                     window_size[1], C)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)
    return x


def get_relative_position_index(win_h: int, win_w: int) -> Tensor:
    """timm swin_transformer.get_relative_position_index."""
    coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w),
                                        indexing="ij"))
    coords_flatten = torch.flatten(coords, 1)
    relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
    relative_coords = relative_coords.permute(1, 2, 0).contiguous()
    relative_coords[:, :, 0] += win_h - 1
    relative_coords[:, :, 1] += win_w - 1
    relative_coords[:, :, 0] *= 2 * win_w - 1
    return relative_coords.sum(-1)


class WindowAttention(nn.Module):
    """timm swin_transformer.WindowAttention (``forward(x, mask=None)``, relative position
    bias table indexed by a non-persistent buffer, ``nn.Softmax``)."""

    def __init__(self, dim: int, num_heads: int, window_size: tuple[int, int],
                 qkv_bias: bool = True, fused_attn: bool = False) -> None:
        super().__init__()
        self.window_size = window_size
        win_h, win_w = self.window_size
        self.window_area = win_h * win_w
        self.num_heads = num_heads
        head_dim = dim // num_heads
        attn_dim = head_dim * num_heads
        self.scale = head_dim ** -0.5
        self.fused_attn = fused_attn
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * win_h - 1) * (2 * win_w - 1), num_heads))
        self.register_buffer("relative_position_index", get_relative_position_index(win_h, win_w),
                             persistent=False)
        self.qkv = nn.Linear(dim, attn_dim * 3, bias=qkv_bias)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(attn_dim, dim)
        self.proj_drop = nn.Dropout(0.0)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.softmax = nn.Softmax(dim=-1)

    def _get_rel_pos_bias(self) -> Tensor:
        relative_position_bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)].view(self.window_area, self.window_area, -1)
        relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
        return relative_position_bias.unsqueeze(0)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        B_, N, C = x.shape
        qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * self.scale
        attn = q @ k.transpose(-2, -1)
        attn = attn + self._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.softmax(attn)
        attn = self.attn_drop(attn)
        x = attn @ v
        x = x.transpose(1, 2).reshape(B_, N, -1)
        x = self.proj(x)
        x = self.proj_drop(x)
        return x


class SwinTransformerBlock(nn.Module):
    """timm swin_transformer.SwinTransformerBlock (``torch.roll``, ``F.pad``, an
    ``attn_mask`` buffer built at init)."""

    def __init__(self, dim: int, input_resolution: tuple[int, int], num_heads: int = 4,
                 window_size: int = 7, shift_size: int = 0, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, drop_path: float = 0.0,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.input_resolution = input_resolution
        self.window_size, self.shift_size = self._calc_window_shift(window_size, shift_size)
        self.window_area = self.window_size[0] * self.window_size[1]
        self.norm1 = norm_layer(dim)
        self.attn = WindowAttention(dim, num_heads=num_heads, window_size=self.window_size,
                                    qkv_bias=qkv_bias)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        if any(self.shift_size):
            H, W = self.input_resolution
            H = math.ceil(H / self.window_size[0]) * self.window_size[0]
            W = math.ceil(W / self.window_size[1]) * self.window_size[1]
            img_mask = torch.zeros((1, H, W, 1))
            cnt = 0
            for h in ((0, -self.window_size[0]), (-self.window_size[0], -self.shift_size[0]),
                      (-self.shift_size[0], None)):
                for w in ((0, -self.window_size[1]), (-self.window_size[1], -self.shift_size[1]),
                          (-self.shift_size[1], None)):
                    img_mask[:, h[0]:h[1], w[0]:w[1], :] = cnt
                    cnt += 1
            mask_windows = window_partition(img_mask, self.window_size)
            mask_windows = mask_windows.view(-1, self.window_area)
            attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
            attn_mask = attn_mask.masked_fill(attn_mask != 0, (-100.0)).masked_fill(
                attn_mask == 0, 0.0)
        else:
            attn_mask = None
        self.register_buffer("attn_mask", attn_mask, persistent=False)

    def _calc_window_shift(self, target_window_size: int, target_shift_size: int
                           ) -> tuple[tuple[int, int], tuple[int, int]]:
        target_window = to_2tuple(target_window_size)
        target_shift = to_2tuple(target_shift_size)
        window_size = [r if r <= w else w for r, w in zip(self.input_resolution, target_window,
                                                          strict=True)]
        shift_size = [0 if r <= w else s for r, w, s in zip(self.input_resolution, window_size,
                                                            target_shift, strict=True)]
        return (window_size[0], window_size[1]), (shift_size[0], shift_size[1])

    def _attn(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        has_shift = any(self.shift_size)
        if has_shift:
            shifted_x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]),
                                   dims=(1, 2))
        else:
            shifted_x = x
        pad_h = (self.window_size[0] - H % self.window_size[0]) % self.window_size[0]
        pad_w = (self.window_size[1] - W % self.window_size[1]) % self.window_size[1]
        shifted_x = torch.nn.functional.pad(shifted_x, (0, 0, 0, pad_w, 0, pad_h))
        _, Hp, Wp, _ = shifted_x.shape
        x_windows = window_partition(shifted_x, self.window_size)
        x_windows = x_windows.view(-1, self.window_area, C)
        attn_windows = self.attn(x_windows, mask=self.attn_mask)
        attn_windows = attn_windows.view(-1, self.window_size[0], self.window_size[1], C)
        shifted_x = window_reverse(attn_windows, self.window_size, Hp, Wp)
        shifted_x = shifted_x[:, :H, :W, :].contiguous()
        if has_shift:
            x = torch.roll(shifted_x, shifts=self.shift_size, dims=(1, 2))
        else:
            x = shifted_x
        return x

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = x.reshape(B, -1, C)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        x = x.reshape(B, H, W, C)
        return x


class SwinPatchMerging(nn.Module):
    """timm swin_transformer.PatchMerging (reshape/permute/flatten(3))."""

    def __init__(self, dim: int, out_dim: int | None = None,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.dim = dim
        self.out_dim = out_dim or 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, self.out_dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        B, H, W, C = x.shape
        _assert(H % 2 == 0, f"x height ({H}) is not even.")
        _assert(W % 2 == 0, f"x width ({W}) is not even.")
        x = x.reshape(B, H // 2, 2, W // 2, 2, C).permute(0, 1, 3, 4, 2, 5).flatten(3)
        x = self.norm(x)
        x = self.reduction(x)
        return x


class SwinTransformerStage(nn.Module):
    """timm swin_transformer.SwinTransformerStage."""

    def __init__(self, dim: int, out_dim: int, input_resolution: tuple[int, int], depth: int,
                 downsample: bool = True, num_heads: int = 4, window_size: int = 7,
                 mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 norm_layer: Callable[..., nn.Module] = nn.LayerNorm) -> None:
        super().__init__()
        self.input_resolution = input_resolution
        self.output_resolution = (tuple(i // 2 for i in input_resolution) if downsample
                                  else input_resolution)
        self.grad_checkpointing = False
        shift_size = window_size // 2
        if downsample:
            self.downsample: nn.Module = SwinPatchMerging(dim=dim, out_dim=out_dim,
                                                          norm_layer=norm_layer)
        else:
            assert dim == out_dim
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[
            SwinTransformerBlock(dim=out_dim, input_resolution=self.output_resolution,
                                 num_heads=num_heads, window_size=window_size,
                                 shift_size=0 if (i % 2 == 0) else shift_size,
                                 mlp_ratio=mlp_ratio, drop_path=drop_path,
                                 norm_layer=norm_layer)
            for i in range(depth)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.downsample(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            raise NotImplementedError("gradient checkpointing is not part of the suite")
        x = self.blocks(x)
        return x


class SwinTransformer(nn.Module):
    """huggingface/pytorch-image-models timm/models/swin_transformer.py (NHWC layout, head
    pools ``x.mean((1, 2))``)."""

    def __init__(self, img_size: int = 224, patch_size: int = 4, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 96,
                 depths: tuple[int, ...] = (2, 2, 6, 2),
                 num_heads: tuple[int, ...] = (3, 6, 12, 24),
                 window_size: int = 7, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1) -> None:
        super().__init__()
        norm_layer = nn.LayerNorm
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size,
                                      in_chans=in_chans, embed_dim=embed_dim,
                                      norm_layer=norm_layer, output_fmt="NHWC")
        patch_grid = self.patch_embed.grid_size
        layers = []
        in_dim = embed_dim
        scale = 1
        for i in range(self.num_layers):
            out_dim = int(embed_dim * 2 ** i)
            layers += [SwinTransformerStage(
                dim=in_dim, out_dim=out_dim,
                input_resolution=(patch_grid[0] // scale, patch_grid[1] // scale),
                depth=depths[i], downsample=i > 0, num_heads=num_heads[i],
                window_size=window_size, mlp_ratio=mlp_ratio, drop_path=drop_path_rate,
                norm_layer=norm_layer)]
            in_dim = out_dim
            if i > 0:
                scale *= 2
        self.layers = nn.Sequential(*layers)
        self.norm = norm_layer(self.num_features)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        x = self.layers(x)
        x = self.norm(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean((1, 2))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


@entry("swin_timm", (3, 32, 32),
       "huggingface/pytorch-image-models timm/models/swin_transformer.py",
       ("torch.roll", "F.pad (no-op)", "window_partition/window_reverse with sizes from "
        "x.shape", "relative position bias: parameter indexed by a buffer",
        "attn_mask buffer (+ constant)", "optional forward arg mask=None", "nn.Softmax",
        "q @ k.transpose", "unbind", "flatten(3) patch merging", "torch._assert",
        "x.mean((1, 2))", "DropPath"))
def swin_timm() -> nn.Module:
    """timm Swin: 32×32, patch 4 (8×8 tokens), embed 8, depths (2, 2), heads (2, 4), window 4
    (stage 1 shifts with a mask; stage 2 at 4×4 cannot)."""
    return SwinTransformer(img_size=32, patch_size=4, num_classes=10, embed_dim=8,
                           depths=(2, 2), num_heads=(2, 4), window_size=4, mlp_ratio=2.0)


# --------------------------------------------------------------------------- MobileViT


class ConvNormAct(nn.Sequential):
    """timm layers.ConvNormAct (conv, BN, SiLU)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 groups: int = 1, apply_act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2,
                              groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_chs)
        self.act = nn.SiLU(inplace=True) if apply_act else nn.Identity()


class InvertedBottle(nn.Module):
    """timm byobnet.BottleneckBlock as MobileViT's inverted residual (1x1 expand, depthwise,
    linear 1x1)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, br: float) -> None:
        super().__init__()
        mid = make_divisible(in_chs * br)
        self.conv1_1x1 = ConvNormAct(in_chs, mid, 1)
        self.conv2_kxk = ConvNormAct(mid, mid, 3, stride=stride, groups=mid)
        self.conv3_1x1 = ConvNormAct(mid, out_chs, 1, apply_act=False)
        self.has_shortcut = stride == 1 and in_chs == out_chs

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv1_1x1(x)
        x = self.conv2_kxk(x)
        x = self.conv3_1x1(x)
        if self.has_shortcut:
            x = x + shortcut
        return x


class MobileVitBlock(nn.Module):
    """timm mobilevit.MobileVitBlock: unfold to patches (``math.ceil`` on ``x.shape``,
    ``if new_h != H or new_w != W:`` → ``F.interpolate`` bilinear), transformer, fold back,
    fuse with ``torch.cat``."""

    def __init__(self, in_chs: int, out_chs: int | None = None, kernel_size: int = 3,
                 mlp_ratio: float = 2.0, transformer_dim: int | None = None,
                 transformer_depth: int = 2, patch_size: int = 8, num_heads: int = 4,
                 no_fusion: bool = False) -> None:
        super().__init__()
        out_chs = out_chs or in_chs
        transformer_dim = transformer_dim or make_divisible(in_chs)
        self.conv_kxk = ConvNormAct(in_chs, in_chs, kernel_size=kernel_size)
        self.conv_1x1 = nn.Conv2d(in_chs, transformer_dim, kernel_size=1, bias=False)
        self.transformer = nn.Sequential(*[
            Block(transformer_dim, mlp_ratio=mlp_ratio, num_heads=num_heads, qkv_bias=True,
                  act_layer=nn.SiLU, norm_layer=nn.LayerNorm)
            for _ in range(transformer_depth)])
        self.norm = nn.LayerNorm(transformer_dim)
        self.conv_proj = ConvNormAct(transformer_dim, out_chs, kernel_size=1)
        if no_fusion:
            self.conv_fusion = None
        else:
            self.conv_fusion = ConvNormAct(in_chs + out_chs, out_chs, kernel_size=kernel_size)
        self.patch_size = to_2tuple(patch_size)
        self.patch_area = self.patch_size[0] * self.patch_size[1]

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv_kxk(x)
        x = self.conv_1x1(x)
        patch_h, patch_w = self.patch_size
        B, C, H, W = x.shape
        new_h, new_w = math.ceil(H / patch_h) * patch_h, math.ceil(W / patch_w) * patch_w
        num_patch_h, num_patch_w = new_h // patch_h, new_w // patch_w
        num_patches = num_patch_h * num_patch_w
        interpolate = False
        if new_h != H or new_w != W:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
            interpolate = True
        x = x.reshape(B * C * num_patch_h, patch_h, num_patch_w, patch_w).transpose(1, 2)
        x = x.reshape(B, C, num_patches, self.patch_area).transpose(1, 3).reshape(
            B * self.patch_area, num_patches, -1)
        x = self.transformer(x)
        x = self.norm(x)
        x = x.contiguous().view(B, self.patch_area, num_patches, -1)
        x = x.transpose(1, 3).reshape(B * C * num_patch_h, num_patch_w, patch_h, patch_w)
        x = x.transpose(1, 2).reshape(B, C, num_patch_h * patch_h, num_patch_w * patch_w)
        if interpolate:
            x = F.interpolate(x, size=(H, W), mode="bilinear", align_corners=False)
        x = self.conv_proj(x)
        if self.conv_fusion is not None:
            x = self.conv_fusion(torch.cat((shortcut, x), dim=1))
        return x


class MobileViT(nn.Module):
    """huggingface/pytorch-image-models timm/models/mobilevit.py (mobilevit_xxs layout on the
    ByobNet skeleton: stem, inverted-residual stages, MobileViT blocks, 1x1 head conv)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, stride=2)
        self.stages = nn.Sequential(
            nn.Sequential(InvertedBottle(8, 8, 1, br=2.0)),
            nn.Sequential(InvertedBottle(8, 12, 2, br=2.0), InvertedBottle(12, 12, 1, br=2.0)),
            nn.Sequential(InvertedBottle(12, 16, 2, br=2.0),
                          MobileVitBlock(16, 16, transformer_dim=16, transformer_depth=1,
                                         patch_size=3, num_heads=2)),
        )
        self.final_conv = ConvNormAct(16, 32, 1)
        self.head_pool = nn.AdaptiveAvgPool2d(1)
        self.head_flatten = nn.Flatten(1)
        self.head_fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.stages(x)
        x = self.final_conv(x)
        x = self.head_pool(x)
        x = self.head_flatten(x)
        return self.head_fc(x)


@entry("mobilevit", (3, 32, 32), "huggingface/pytorch-image-models timm/models/mobilevit.py",
       ("Python control flow on shapes: if new_h != H or new_w != W", "math.ceil on x.shape",
        "F.interpolate bilinear (4x4 -> 6x6 and back)", "unfold/fold by reshape + transpose",
        "timm transformer Block (SDPA)", "silu", "cat fusion", "depthwise conv2d"))
def mobilevit() -> nn.Module:
    """MobileViT-XXS-like: the MobileViT block sees a 4×4 map with patch 3, so its interpolate
    branch runs (timm's ``patch_size`` rounding path)."""
    return MobileViT(num_classes=10)


# ----------------------------------------------------------------------------- ResNeSt


class RadixSoftmax(nn.Module):
    """timm layers.split_attn.RadixSoftmax (softmax over the radix, not at the output)."""

    def __init__(self, radix: int, cardinality: int) -> None:
        super().__init__()
        self.radix = radix
        self.cardinality = cardinality

    def forward(self, x: Tensor) -> Tensor:
        batch = x.size(0)
        if self.radix > 1:
            x = x.view(batch, self.cardinality, self.radix, -1).transpose(1, 2)
            x = F.softmax(x, dim=1)
            x = x.reshape(batch, -1)
        else:
            x = torch.sigmoid(x)
        return x


class SplitAttn(nn.Module):
    """timm layers.split_attn.SplitAttn (``x.sum(dim=1)`` over radix splits, products with
    the attention, ``.sum(dim=1)``)."""

    def __init__(self, in_channels: int, out_channels: int | None = None, kernel_size: int = 3,
                 stride: int = 1, padding: int | None = None, groups: int = 1,
                 radix: int = 2, rd_ratio: float = 0.25, rd_divisor: int = 8,
                 norm_layer: Callable[..., nn.Module] | None = None) -> None:
        super().__init__()
        out_channels = out_channels or in_channels
        self.radix = radix
        mid_chs = out_channels * radix
        attn_chs = make_divisible(in_channels * radix * rd_ratio, min_value=8,
                                  divisor=rd_divisor)
        padding = kernel_size // 2 if padding is None else padding
        self.conv = nn.Conv2d(in_channels, mid_chs, kernel_size, stride, padding,
                              groups=groups * radix, bias=False)
        self.bn0 = norm_layer(mid_chs) if norm_layer else nn.Identity()
        self.drop = nn.Identity()
        self.act0 = nn.ReLU(inplace=True)
        self.fc1 = nn.Conv2d(out_channels, attn_chs, 1, groups=groups)
        self.bn1 = norm_layer(attn_chs) if norm_layer else nn.Identity()
        self.act1 = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(attn_chs, mid_chs, 1, groups=groups)
        self.rsoftmax = RadixSoftmax(radix, groups)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.bn0(x)
        x = self.drop(x)
        x = self.act0(x)
        B, RC, H, W = x.shape
        if self.radix > 1:
            x = x.reshape((B, self.radix, RC // self.radix, H, W))
            x_gap = x.sum(dim=1)
        else:
            x_gap = x
        x_gap = x_gap.mean((2, 3), keepdim=True)
        x_gap = self.fc1(x_gap)
        x_gap = self.bn1(x_gap)
        x_gap = self.act1(x_gap)
        x_attn = self.fc2(x_gap)
        x_attn = self.rsoftmax(x_attn).view(B, -1, 1, 1)
        if self.radix > 1:
            out = (x * x_attn.reshape((B, self.radix, RC // self.radix, 1, 1))).sum(dim=1)
        else:
            out = x * x_attn
        return out.contiguous()


class ResNestBottleneck(nn.Module):
    """timm resnest.ResNestBottleneck (avd: AvgPool2d after the split attention)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, radix: int = 2, cardinality: int = 1,
                 base_width: int = 64, avd: bool = True, is_first: bool = False) -> None:
        super().__init__()
        group_width = int(planes * (base_width / 64.0)) * cardinality
        if avd and (stride > 1 or is_first):
            avd_stride = stride
            stride = 1
        else:
            avd_stride = 0
        self.radix = radix
        self.conv1 = nn.Conv2d(inplanes, group_width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(group_width)
        self.act1 = nn.ReLU(inplace=True)
        self.avd_first = None
        self.conv2 = SplitAttn(group_width, group_width, kernel_size=3, stride=stride,
                               groups=cardinality, radix=radix, norm_layer=nn.BatchNorm2d)
        self.bn2 = nn.Identity()
        self.drop_block = nn.Identity()
        self.act2 = nn.Identity()
        self.avd_last = nn.AvgPool2d(3, avd_stride, padding=1) if avd_stride > 0 else None
        self.conv3 = nn.Conv2d(group_width, planes * 4, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.act3 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.act1(out)
        if self.avd_first is not None:
            out = self.avd_first(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.drop_block(out)
        out = self.act2(out)
        if self.avd_last is not None:
            out = self.avd_last(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.downsample is not None:
            shortcut = self.downsample(x)
        out += shortcut
        out = self.act3(out)
        return out


class ResNeSt(nn.Module):
    """huggingface/pytorch-image-models timm/models/resnest.py on timm's ResNet: deep stem,
    avg_down shortcuts (AvgPool2d ceil_mode, count_include_pad=False), SelectAdaptivePool2d."""

    def __init__(self, layers: list[int], base: int = 64, stem_width: int = 32,
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, stem_width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True),
            nn.Conv2d(stem_width, stem_width * 2, 3, stride=1, padding=1, bias=False))
        self.bn1 = nn.BatchNorm2d(stem_width * 2)
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = stem_width * 2
        stages = []
        for i, n in enumerate(layers):
            planes = base * 2 ** i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                downsample = None
                if j == 0 and (stride != 1 or inplanes != planes * 4):
                    downsample = nn.Sequential(
                        nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False)
                        if stride > 1 else nn.Identity(),
                        nn.Conv2d(inplanes, planes * 4, 1, stride=1, bias=False),
                        nn.BatchNorm2d(planes * 4))
                blocks.append(ResNestBottleneck(inplanes, planes, stride if j == 0 else 1,
                                                downsample, is_first=(i == 0 and j == 0)))
                inplanes = planes * 4
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


@entry("resnest", (3, 32, 32), "huggingface/pytorch-image-models timm/models/resnest.py "
       "+ timm/layers/split_attn.py",
       ("split attention: reshape, x.sum(dim=1), mean((2, 3), keepdim)",
        "F.softmax over the radix (not at the output)", "product of two tensors then .sum",
        "grouped conv2d", "avgpool count_include_pad=False ceil_mode", "deep stem",
        "in-place residual +="))
def resnest() -> nn.Module:
    """ResNeSt (radix 2) with layers [1, 1, 1], base 4, stem width 8."""
    return ResNeSt([1, 1, 1], base=4, stem_width=8, num_classes=10)


# ---------------------------------------------------------------------------- GhostNet


def hard_sigmoid(x: Tensor, inplace: bool = False) -> Tensor:
    """timm layers.activations.hard_sigmoid: ``F.relu6(x + 3.) / 6.``."""
    return F.relu6(x + 3.0) / 6.0


class HardSigmoid(nn.Module):
    """timm layers.activations.HardSigmoid."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, x: Tensor) -> Tensor:
        return hard_sigmoid(x, self.inplace)


class SqueezeExcite(nn.Module):
    """timm efficientnet_blocks.SqueezeExcite (``x.mean((2, 3), keepdim=True)``,
    ``x * self.gate(x_se)``)."""

    def __init__(self, in_chs: int, rd_ratio: float = 0.25) -> None:
        super().__init__()
        rd_channels = make_divisible(in_chs * rd_ratio, 4)
        self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
        self.gate = HardSigmoid()

    def forward(self, x: Tensor) -> Tensor:
        x_se = x.mean((2, 3), keepdim=True)
        x_se = self.conv_reduce(x_se)
        x_se = self.act1(x_se)
        x_se = self.conv_expand(x_se)
        return x * self.gate(x_se)


class GhostModule(nn.Module):
    """timm ghostnet.GhostModule (cat of primary and cheap features, then the channel slice
    ``out[:, :self.out_chs, :, :]``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, ratio: int = 2,
                 dw_size: int = 3, stride: int = 1, use_act: bool = True) -> None:
        super().__init__()
        self.out_chs = out_chs
        init_chs = math.ceil(out_chs / ratio)
        new_chs = init_chs * (ratio - 1)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_chs, init_chs, kernel_size, stride, kernel_size // 2, bias=False),
            nn.BatchNorm2d(init_chs),
            nn.ReLU(inplace=True) if use_act else nn.Identity(),
        )
        self.cheap_operation = nn.Sequential(
            nn.Conv2d(init_chs, new_chs, dw_size, 1, dw_size // 2, groups=init_chs, bias=False),
            nn.BatchNorm2d(new_chs),
            nn.ReLU(inplace=True) if use_act else nn.Identity(),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        x2 = self.cheap_operation(x1)
        out = torch.cat([x1, x2], dim=1)
        return out[:, :self.out_chs, :, :]


class GhostBottleneck(nn.Module):
    """timm ghostnet.GhostBottleneck (``x += self.shortcut(shortcut)``, empty Sequential
    shortcut)."""

    def __init__(self, in_chs: int, mid_chs: int, out_chs: int, dw_kernel_size: int = 3,
                 stride: int = 1, se_ratio: float = 0.0) -> None:
        super().__init__()
        has_se = se_ratio is not None and se_ratio > 0.0
        self.stride = stride
        self.ghost1 = GhostModule(in_chs, mid_chs, use_act=True)
        if self.stride > 1:
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride=stride,
                                     padding=(dw_kernel_size - 1) // 2, groups=mid_chs,
                                     bias=False)
            self.bn_dw = nn.BatchNorm2d(mid_chs)
        else:
            self.conv_dw = None
            self.bn_dw = None
        self.se = SqueezeExcite(mid_chs, rd_ratio=se_ratio) if has_se else None
        self.ghost2 = GhostModule(mid_chs, out_chs, use_act=False)
        if in_chs == out_chs and self.stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_chs, in_chs, dw_kernel_size, stride=stride,
                          padding=(dw_kernel_size - 1) // 2, groups=in_chs, bias=False),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, out_chs, 1, stride=1, padding=0, bias=False),
                nn.BatchNorm2d(out_chs),
            )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.ghost1(x)
        if self.conv_dw is not None:
            x = self.conv_dw(x)
            x = self.bn_dw(x)
        if self.se is not None:
            x = self.se(x)
        x = self.ghost2(x)
        x += self.shortcut(shortcut)
        return x


class GhostNet(nn.Module):
    """huggingface/pytorch-image-models timm/models/ghostnet.py (v1)."""

    def __init__(self, cfgs: list[list[list[float]]], num_classes: int = 1000,
                 width: float = 1.0, drop_rate: float = 0.2, num_features: int = 1280) -> None:
        super().__init__()
        self.drop_rate = drop_rate
        stem_chs = make_divisible(16 * width, 4)
        self.conv_stem = nn.Conv2d(3, stem_chs, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_chs)
        self.act1 = nn.ReLU(inplace=True)
        prev_chs = stem_chs
        stages: list[nn.Module] = []
        exp_size = 16
        for cfg in cfgs:
            layers = []
            for k, exp_size, c, se_ratio, s in cfg:
                out_chs = make_divisible(c * width, 4)
                mid_chs = make_divisible(exp_size * width, 4)
                layers.append(GhostBottleneck(prev_chs, mid_chs, out_chs, int(k), int(s),
                                              se_ratio=se_ratio))
                prev_chs = out_chs
            stages.append(nn.Sequential(*layers))
        out_chs = make_divisible(exp_size * width, 4)
        stages.append(nn.Sequential(nn.Sequential(
            nn.Conv2d(prev_chs, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
            nn.ReLU(inplace=True))))
        self.blocks = nn.Sequential(*stages)
        self.num_features = num_features
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_head = nn.Conv2d(out_chs, num_features, 1, 1, 0, bias=True)
        self.act2 = nn.ReLU(inplace=True)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Linear(num_features, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv_stem(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.blocks(x)
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        x = self.conv_head(x)
        x = self.act2(x)
        x = self.flatten(x)
        if self.drop_rate > 0.0:
            x = F.dropout(x, p=self.drop_rate, training=self.training)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_features(x)
        x = self.forward_head(x)
        return x


@entry("ghostnet", (3, 32, 32), "huggingface/pytorch-image-models timm/models/ghostnet.py",
       ("cat then channel slice out[:, :C]", "hard_sigmoid: F.relu6(x + 3.) / 6.",
        "squeeze-excite x * gate", "x.mean((2, 3), keepdim=True)", "in-place x += shortcut",
        "empty nn.Sequential shortcut", "depthwise conv2d", "F.dropout(training=...)",
        "conv head on pooled features"))
def ghostnet() -> nn.Module:
    """GhostNet-1.0 layout of timm ghostnet.py, first 5 stages, width 0.5, 64 head features."""
    cfgs = [
        [[3, 16, 16, 0, 1]],
        [[3, 48, 24, 0, 2]],
        [[3, 72, 24, 0, 1]],
        [[5, 72, 40, 0.25, 2]],
        [[5, 120, 40, 0.25, 1]],
    ]
    return GhostNet(cfgs, num_classes=10, width=0.5, num_features=64)


# ------------------------------------------------------------------------------ HRNet


class HrBasicBlock(nn.Module):
    """timm resnet.BasicBlock as used by timm hrnet's branches."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        x = self.conv2(x)
        x = self.bn2(x)
        if self.downsample is not None:
            shortcut = self.downsample(shortcut)
        x += shortcut
        x = self.act2(x)
        return x


class HighResolutionModule(nn.Module):
    """timm hrnet.HighResolutionModule: parallel branches and fuse layers (1x1 conv +
    ``nn.Upsample(mode='nearest')`` up, strided 3x3 convs down, ``y = y + f(x[j])``)."""

    def __init__(self, num_branches: int, num_blocks: list[int], num_channels: list[int]
                 ) -> None:
        super().__init__()
        self.num_branches = num_branches
        self.num_in_chs = list(num_channels)
        self.branches = nn.ModuleList([
            nn.Sequential(*[HrBasicBlock(num_channels[i], num_channels[i])
                            for _ in range(num_blocks[i])])
            for i in range(num_branches)])
        self.fuse_layers = self._make_fuse_layers()
        self.fuse_act = nn.ReLU(False)

    def _make_fuse_layers(self) -> nn.ModuleList:
        num_branches = self.num_branches
        num_in_chs = self.num_in_chs
        fuse_layers = []
        for i in range(num_branches):
            fuse_layer = []
            for j in range(num_branches):
                if j > i:
                    fuse_layer.append(nn.Sequential(
                        nn.Conv2d(num_in_chs[j], num_in_chs[i], 1, 1, 0, bias=False),
                        nn.BatchNorm2d(num_in_chs[i]),
                        nn.Upsample(scale_factor=2 ** (j - i), mode="nearest")))
                elif j == i:
                    fuse_layer.append(nn.Identity())
                else:
                    conv3x3s = []
                    for k in range(i - j):
                        if k == i - j - 1:
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(num_in_chs[j], num_in_chs[i], 3, 2, 1, bias=False),
                                nn.BatchNorm2d(num_in_chs[i])))
                        else:
                            conv3x3s.append(nn.Sequential(
                                nn.Conv2d(num_in_chs[j], num_in_chs[j], 3, 2, 1, bias=False),
                                nn.BatchNorm2d(num_in_chs[j]), nn.ReLU(False)))
                    fuse_layer.append(nn.Sequential(*conv3x3s))
            fuse_layers.append(nn.ModuleList(fuse_layer))
        return nn.ModuleList(fuse_layers)

    def forward(self, x: list[Tensor]) -> list[Tensor]:
        if self.num_branches == 1:
            return [self.branches[0](x[0])]
        for i, branch in enumerate(self.branches):
            x[i] = branch(x[i])
        x_fuse = []
        for _i, fuse_outer in enumerate(self.fuse_layers):
            y = None
            for j, f in enumerate(fuse_outer):
                if y is None:
                    y = f(x[j])
                else:
                    y = y + f(x[j])
            x_fuse.append(self.fuse_act(y))
        return x_fuse


class HighResolutionNet(nn.Module):
    """huggingface/pytorch-image-models timm/models/hrnet.py (classification 'incre' head),
    two stages of multi-resolution modules."""

    def __init__(self, num_classes: int = 10, stem: int = 8,
                 channels: tuple[int, int, int] = (4, 8, 16), head: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act1 = nn.ReLU(inplace=True)
        self.layer1 = HrBasicBlock(stem, stem)
        c1, c2, c3 = channels
        self.transition1 = nn.ModuleList([
            nn.Sequential(nn.Conv2d(stem, c1, 3, 1, 1, bias=False), nn.BatchNorm2d(c1),
                          nn.ReLU(False)),
            nn.Sequential(nn.Sequential(nn.Conv2d(stem, c2, 3, 2, 1, bias=False),
                                        nn.BatchNorm2d(c2), nn.ReLU(False)))])
        self.stage2 = nn.Sequential(HighResolutionModule(2, [1, 1], [c1, c2]))
        self.transition2 = nn.ModuleList([
            nn.Identity(), nn.Identity(),
            nn.Sequential(nn.Sequential(nn.Conv2d(c2, c3, 3, 2, 1, bias=False),
                                        nn.BatchNorm2d(c3), nn.ReLU(False)))])
        self.stage3 = nn.Sequential(HighResolutionModule(3, [1, 1, 1], [c1, c2, c3]))
        self.incre_modules = nn.ModuleList([
            HrBasicBlock(c, head // 4 * (2 ** i),
                         downsample=nn.Sequential(nn.Conv2d(c, head // 4 * (2 ** i), 1,
                                                            bias=False),
                                                  nn.BatchNorm2d(head // 4 * (2 ** i))))
            for i, c in enumerate(channels)])
        self.downsamp_modules = nn.ModuleList([
            nn.Sequential(nn.Conv2d(head // 4 * (2 ** i), head // 4 * (2 ** (i + 1)), 3, 2, 1),
                          nn.BatchNorm2d(head // 4 * (2 ** (i + 1))), nn.ReLU(inplace=True))
            for i in range(len(channels) - 1)])
        self.final_layer = nn.Sequential(nn.Conv2d(head, head * 2, 1), nn.BatchNorm2d(head * 2),
                                         nn.ReLU(inplace=True))
        self.global_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        self.classifier = nn.Linear(head * 2, num_classes)

    def stages(self, x: Tensor) -> list[Tensor]:
        x = self.layer1(x)
        xl = [t(x) for t in self.transition1]
        yl = self.stage2(xl)
        xl = [t(yl[-1]) if i == len(self.transition2) - 1 else t(yl[i])
              for i, t in enumerate(self.transition2)]
        yl = self.stage3(xl)
        return yl

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act1(x)
        yl = self.stages(x)
        y = self.incre_modules[0](yl[0])
        for i, down in enumerate(self.downsamp_modules):
            y = self.incre_modules[i + 1](yl[i + 1]) + down(y)
        y = self.final_layer(y)
        return y

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = self.global_pool(x)
        return x if pre_logits else self.classifier(x)

    def forward(self, x: Tensor) -> Tensor:
        y = self.forward_features(x)
        return self.forward_head(y)


@entry("hrnet", (3, 32, 32), "huggingface/pytorch-image-models timm/models/hrnet.py",
       ("lists of tensors between modules", "nn.Upsample nearest (scale 2 and 4)",
        "multi-branch fuse y = y + f(x[j])", "strided conv chains", "in-place x += shortcut",
        "nn.Identity transitions", "incre classification head"))
def hrnet() -> nn.Module:
    """HRNet-like net with timm hrnet.py's module code: 3 resolutions (16, 8, 4 on 32×32
    inputs), one module per stage, channels 4/8/16."""
    return HighResolutionNet(num_classes=10)


# -------------------------------------------------------------------------------- DLA


class DlaBasicBlock(nn.Module):
    """ucbdrive/dla dla.BasicBlock (``forward(x, residual=None)``)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride, padding=dilation,
                               bias=False, dilation=dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=dilation,
                               bias=False, dilation=dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.stride = stride

    def forward(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if residual is None:
            residual = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out += residual
        out = self.relu(out)
        return out


class Root(nn.Module):
    """ucbdrive/dla dla.Root (``forward(*x)``, ``torch.cat(x, 1)``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 residual: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=1, bias=False,
                              padding=(kernel_size - 1) // 2)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.residual = residual

    def forward(self, *x: Tensor) -> Tensor:
        children = x
        out = self.conv(torch.cat(x, 1))
        out = self.bn(out)
        if self.residual:
            out += children[0]
        out = self.relu(out)
        return out


class Tree(nn.Module):
    """ucbdrive/dla dla.Tree (``forward(x, residual=None, children=None)``, recursive)."""

    def __init__(self, levels: int, in_channels: int, out_channels: int, stride: int = 1,
                 level_root: bool = False, root_dim: int = 0, root_kernel_size: int = 1,
                 root_residual: bool = False) -> None:
        super().__init__()
        if root_dim == 0:
            root_dim = 2 * out_channels
        if level_root:
            root_dim += in_channels
        if levels == 1:
            self.tree1: nn.Module = DlaBasicBlock(in_channels, out_channels, stride)
            self.tree2: nn.Module = DlaBasicBlock(out_channels, out_channels, 1)
        else:
            self.tree1 = Tree(levels - 1, in_channels, out_channels, stride, root_dim=0,
                              root_kernel_size=root_kernel_size, root_residual=root_residual)
            self.tree2 = Tree(levels - 1, out_channels, out_channels,
                              root_dim=root_dim + out_channels,
                              root_kernel_size=root_kernel_size, root_residual=root_residual)
        if levels == 1:
            self.root = Root(root_dim, out_channels, root_kernel_size, root_residual)
        self.level_root = level_root
        self.root_dim = root_dim
        self.downsample = None
        self.project = None
        self.levels = levels
        if stride > 1:
            self.downsample = nn.MaxPool2d(stride, stride=stride)
        if in_channels != out_channels:
            self.project = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x: Tensor, residual: Tensor | None = None,
                children: list[Tensor] | None = None) -> Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x) if self.downsample else x
        residual = self.project(bottom) if self.project else bottom
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, residual)
        if self.levels == 1:
            x2 = self.tree2(x1)
            x = self.root(x2, x1, *children)
        else:
            children.append(x1)
            x = self.tree2(x1, children=children)
        return x


class DLA(nn.Module):
    """ucbdrive/dla dla.py (the DLA of timm/models/dla.py; 1x1-conv classifier and
    ``x.view(x.size(0), -1)``)."""

    def __init__(self, levels: list[int], channels: list[int], num_classes: int = 1000,
                 residual_root: bool = False, pool_size: int = 7) -> None:
        super().__init__()
        self.channels = channels
        self.base_layer = nn.Sequential(
            nn.Conv2d(3, channels[0], kernel_size=7, stride=1, padding=3, bias=False),
            nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        self.level0 = self._make_conv_level(channels[0], channels[0], levels[0])
        self.level1 = self._make_conv_level(channels[0], channels[1], levels[1], stride=2)
        self.level2 = Tree(levels[2], channels[1], channels[2], 2, level_root=False,
                           root_residual=residual_root)
        self.level3 = Tree(levels[3], channels[2], channels[3], 2, level_root=True,
                           root_residual=residual_root)
        self.level4 = Tree(levels[4], channels[3], channels[4], 2, level_root=True,
                           root_residual=residual_root)
        self.level5 = Tree(levels[5], channels[4], channels[5], 2, level_root=True,
                           root_residual=residual_root)
        self.avgpool = nn.AvgPool2d(pool_size)
        self.fc = nn.Conv2d(channels[-1], num_classes, kernel_size=1, stride=1, padding=0,
                            bias=True)

    def _make_conv_level(self, inplanes: int, planes: int, convs: int, stride: int = 1,
                         dilation: int = 1) -> nn.Sequential:
        modules: list[nn.Module] = []
        for i in range(convs):
            modules.extend([
                nn.Conv2d(inplanes, planes, kernel_size=3, stride=stride if i == 0 else 1,
                          padding=dilation, bias=False, dilation=dilation),
                nn.BatchNorm2d(planes),
                nn.ReLU(inplace=True)])
            inplanes = planes
        return nn.Sequential(*modules)

    def forward(self, x: Tensor) -> Tensor:
        y = []
        x = self.base_layer(x)
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            y.append(x)
        x = self.avgpool(x)
        x = self.fc(x)
        x = x.view(x.size(0), -1)
        return x


@entry("dla", (3, 32, 32), "ucbdrive/dla dla.py (= timm/models/dla.py DLA-34 layout)",
       ("optional forward args (residual=None, children=None)", "varargs forward(*x)",
        "cat of a list built in Python", "recursive Tree modules", "maxpool downsample",
        "in-place out += residual", "1x1 conv classifier", "getattr(self, f'level{i}')"))
def dla() -> nn.Module:
    """DLA-34 layout (levels [1, 1, 1, 2, 2, 1], residual roots) with channels 4–32 on 32×32
    (pool size 1 at the end)."""
    return DLA([1, 1, 1, 2, 2, 1], [4, 8, 8, 16, 16, 32], num_classes=10, residual_root=True,
               pool_size=1)
