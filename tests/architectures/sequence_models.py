"""Recurrent, attention and token models written as their tutorials write them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._registry import entry

# ------------------------------------------------- yunjey/pytorch-tutorial (MNIST rows)


class RNN(nn.Module):
    """yunjey/pytorch-tutorial tutorials/02-intermediate/recurrent_neural_network/main.py:
    explicit ``h0``/``c0`` zeros sized by ``x.size(0)``, ``self.fc(out[:, -1, :])``."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int,
                 num_classes: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        c0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size).to(x.device)
        out, _ = self.lstm(x, (h0, c0))
        out = self.fc(out[:, -1, :])
        return out


@entry("lstm_rows", (7, 28), "yunjey/pytorch-tutorial tutorials/02-intermediate/"
       "recurrent_neural_network/main.py",
       ("nn.LSTM 2 layers batch_first", "h0/c0 = torch.zeros(..., x.size(0), ...).to(device)",
        "out[:, -1, :]", "linear"), distribution="normal")
def lstm_rows() -> nn.Module:
    """The tutorial's LSTM over image rows (input size 28), 7 rows, hidden 16, 2 layers."""
    return RNN(input_size=28, hidden_size=16, num_layers=2, num_classes=10)


class BiRNN(nn.Module):
    """yunjey/pytorch-tutorial tutorials/02-intermediate/bidirectional_recurrent_neural_network/
    main.py (``num_layers*2`` initial states, ``hidden_size*2`` classifier)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int,
                 num_classes: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=True,
                            bidirectional=True)
        self.fc = nn.Linear(hidden_size * 2, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size).to(x.device)
        c0 = torch.zeros(self.num_layers * 2, x.size(0), self.hidden_size).to(x.device)
        out, _ = self.lstm(x, (h0, c0))
        out = self.fc(out[:, -1, :])
        return out


@entry("bilstm_rows", (5, 28), "yunjey/pytorch-tutorial tutorials/02-intermediate/"
       "bidirectional_recurrent_neural_network/main.py",
       ("nn.LSTM bidirectional 2 layers batch_first", "explicit zero initial states",
        "out[:, -1, :] of both directions", "linear"), distribution="normal")
def bilstm_rows() -> nn.Module:
    """The tutorial's bidirectional LSTM over 5 rows of 28, hidden 8, 2 layers."""
    return BiRNN(input_size=28, hidden_size=8, num_layers=2, num_classes=10)


class GRUClassifier(nn.Module):
    """A sequence classifier in the tutorials' form ``out, _ = self.gru(x);
    self.fc(out[:, -1])`` (no initial state given: h0 = 0)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int,
                 num_classes: int) -> None:
        super().__init__()
        self.gru = nn.GRU(input_size, hidden_size, num_layers, batch_first=True, dropout=0.1)
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out, _ = self.gru(x)
        return self.fc(out[:, -1])


@entry("gru", (8, 6), "PyTorch tutorials' recurrent classifier pattern "
       "(out, _ = self.gru(x); self.fc(out[:, -1]))",
       ("nn.GRU 2 layers batch_first with inter-layer dropout", "h0 omitted",
        "out[:, -1]", "linear"), distribution="normal")
def gru() -> nn.Module:
    """GRU classifier: 8 steps of 6 features, hidden 12, 2 layers."""
    return GRUClassifier(input_size=6, hidden_size=12, num_layers=2, num_classes=10)


class ElmanClassifier(nn.Module):
    """nn.RNN (tanh) classifier reading the final hidden state ``hn[-1]``, as in the PyTorch
    recurrent tutorials."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int,
                 num_classes: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.rnn = nn.RNN(input_size, hidden_size, num_layers, batch_first=True,
                          nonlinearity="tanh")
        self.fc = nn.Linear(hidden_size, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        h0 = torch.zeros(self.num_layers, x.size(0), self.hidden_size, device=x.device)
        out, hn = self.rnn(x, h0)
        return self.fc(hn[-1])


@entry("rnn_tanh", (8, 6), "PyTorch tutorials' nn.RNN classifier pattern (hn[-1])",
       ("nn.RNN tanh 2 layers batch_first", "h0 given", "final hidden state hn[-1]",
        "linear"), distribution="normal")
def rnn_tanh() -> nn.Module:
    """Elman RNN classifier: 8 steps of 6 features, hidden 12, 2 layers."""
    return ElmanClassifier(input_size=6, hidden_size=12, num_layers=2, num_classes=10)


# ------------------------------------------------- bentrevett/pytorch-sentiment-analysis


class SentimentLSTM(nn.Module):
    """bentrevett/pytorch-sentiment-analysis "2 - Upgraded Sentiment Analysis" RNN: embedding,
    bidirectional multi-layer LSTM over ``[sent len, batch]``, ``torch.cat((hidden[-2,:,:],
    hidden[-1,:,:]), dim=1)``. Without packing (no lengths), and taking batch-first tokens
    which it transposes to the tutorial's layout."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, output_dim: int,
                 n_layers: int, bidirectional: bool, dropout: float, pad_idx: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
        self.rnn = nn.LSTM(embedding_dim, hidden_dim, num_layers=n_layers,
                           bidirectional=bidirectional, dropout=dropout)
        self.fc = nn.Linear(hidden_dim * 2, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor) -> Tensor:
        text = text.permute(1, 0)
        embedded = self.dropout(self.embedding(text))
        output, (hidden, cell) = self.rnn(embedded)
        hidden = self.dropout(torch.cat((hidden[-2, :, :], hidden[-1, :, :]), dim=1))
        return self.fc(hidden)


@entry("lstm_sentiment", (6,), "bentrevett/pytorch-sentiment-analysis "
       "2 - Upgraded Sentiment Analysis.ipynb (RNN class)",
       ("int64 tokens", "permute of the token tensor", "nn.Embedding padding_idx",
        "nn.LSTM bidirectional 2 layers, sequence-first", "(hidden, cell) of the final step",
        "cat of hidden[-2], hidden[-1]", "dropout"), vocab=50, num_classes=2)
def lstm_sentiment() -> nn.Module:
    """Sentiment LSTM: vocabulary 50, 6 tokens, embedding 8, hidden 8, 2 layers, 2 classes."""
    return SentimentLSTM(vocab_size=50, embedding_dim=8, hidden_dim=8, output_dim=2,
                         n_layers=2, bidirectional=True, dropout=0.5, pad_idx=1)


class CNN(nn.Module):
    """bentrevett/pytorch-sentiment-analysis "4 - Convolutional Sentiment Analysis" CNN
    (Kim 2014): ``Conv2d(1, n, (fs, emb))``, ``F.max_pool1d(conv, conv.shape[2])``."""

    def __init__(self, vocab_size: int, embedding_dim: int, n_filters: int,
                 filter_sizes: list[int], output_dim: int, dropout: float,
                 pad_idx: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
        self.convs = nn.ModuleList([
            nn.Conv2d(in_channels=1, out_channels=n_filters, kernel_size=(fs, embedding_dim))
            for fs in filter_sizes])
        self.fc = nn.Linear(len(filter_sizes) * n_filters, output_dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, text: Tensor) -> Tensor:
        embedded = self.embedding(text)
        embedded = embedded.unsqueeze(1)
        conved = [F.relu(conv(embedded)).squeeze(3) for conv in self.convs]
        pooled = [F.max_pool1d(conv, conv.shape[2]).squeeze(2) for conv in conved]
        cat = self.dropout(torch.cat(pooled, dim=1))
        return self.fc(cat)


@entry("text_cnn", (12,), "bentrevett/pytorch-sentiment-analysis "
       "4 - Convolutional Sentiment Analysis.ipynb (CNN class)",
       ("int64 tokens", "nn.Embedding", "unsqueeze / squeeze", "Conv2d over (fs, emb) windows",
        "F.max_pool1d with kernel from conv.shape[2]", "F.relu", "cat", "dropout"),
       vocab=50, num_classes=2)
def text_cnn() -> nn.Module:
    """Kim CNN: vocabulary 50, 12 tokens, embedding 8, 4 filters of widths 2/3/4, 2 classes."""
    return CNN(vocab_size=50, embedding_dim=8, n_filters=4, filter_sizes=[2, 3, 4],
               output_dim=2, dropout=0.5, pad_idx=1)


class FastText(nn.Module):
    """bentrevett/pytorch-sentiment-analysis "3 - Faster Sentiment Analysis" FastText:
    ``F.avg_pool2d(embedded, (embedded.shape[1], 1)).squeeze(1)`` over a 3-D tensor. Takes
    batch-first tokens and transposes them to the tutorial's ``[sent len, batch]``."""

    def __init__(self, vocab_size: int, embedding_dim: int, output_dim: int,
                 pad_idx: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
        self.fc = nn.Linear(embedding_dim, output_dim)

    def forward(self, text: Tensor) -> Tensor:
        text = text.t()
        embedded = self.embedding(text)
        embedded = embedded.permute(1, 0, 2)
        pooled = F.avg_pool2d(embedded, (embedded.shape[1], 1)).squeeze(1)
        return self.fc(pooled)


@entry("fasttext", (12,), "bentrevett/pytorch-sentiment-analysis "
       "3 - Faster Sentiment Analysis.ipynb (FastText class)",
       ("int64 tokens", "text.t() before the embedding", "nn.Embedding",
        "F.avg_pool2d on a 3-D tensor with a kernel from embedded.shape[1]", "squeeze",
        "linear"), vocab=50, num_classes=2)
def fasttext() -> nn.Module:
    """FastText: vocabulary 50, 12 tokens, embedding 8, 2 classes."""
    return FastText(vocab_size=50, embedding_dim=8, output_dim=2, pad_idx=1)


class TextClassificationModel(nn.Module):
    """pytorch/tutorials beginner_source/text_sentiment_ngrams_tutorial.py:
    ``nn.EmbeddingBag`` + Linear, ``forward(text, offsets)`` (offsets optional here: 2-D
    batches of equal-length bags need none)."""

    def __init__(self, vocab_size: int, embed_dim: int, num_class: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
        self.fc = nn.Linear(embed_dim, num_class)
        self.init_weights()

    def init_weights(self) -> None:
        initrange = 0.5
        self.embedding.weight.data.uniform_(-initrange, initrange)
        self.fc.weight.data.uniform_(-initrange, initrange)
        self.fc.bias.data.zero_()

    def forward(self, text: Tensor, offsets: Tensor | None = None) -> Tensor:
        embedded = self.embedding(text, offsets)
        return self.fc(embedded)


@entry("embeddingbag_text", (12,),
       "pytorch/tutorials beginner_source/text_sentiment_ngrams_tutorial.py",
       ("int64 tokens", "nn.EmbeddingBag (mean mode)", "optional forward arg offsets=None",
        "linear"), vocab=50, num_classes=4)
def embeddingbag_text() -> nn.Module:
    """The tutorial's AG-News classifier: vocabulary 50, bags of 12 tokens, embedding 8,
    4 classes."""
    return TextClassificationModel(vocab_size=50, embed_dim=8, num_class=4)


# ------------------------------------------------- pytorch/tutorials nn.Transformer


class PositionalEncoding(nn.Module):
    """pytorch/tutorials beginner_source/transformer_tutorial.py PositionalEncoding, batch-first
    (a ``pe`` buffer sliced by ``x.size(1)``)."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(1, max_len, d_model)
        pe[0, :, 0::2] = torch.sin(position * div_term)
        pe[0, :, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.pe[:, :x.size(1)]
        return self.dropout(x)


class TransformerClassifier(nn.Module):
    """pytorch/tutorials transformer_tutorial.py TransformerModel turned classifier:
    ``embedding(src) * math.sqrt(d_model)``, positional encoding, ``nn.TransformerEncoder``
    (batch_first), ``forward(src, src_mask=None)``, mean over tokens, Linear."""

    def __init__(self, ntoken: int, d_model: int, nhead: int, d_hid: int, nlayers: int,
                 num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.model_type = "Transformer"
        self.pos_encoder = PositionalEncoding(d_model, dropout)
        encoder_layers = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout,
                                                    batch_first=True)
        self.transformer_encoder = nn.TransformerEncoder(encoder_layers, nlayers,
                                                         enable_nested_tensor=False)
        self.embedding = nn.Embedding(ntoken, d_model)
        self.d_model = d_model
        self.linear = nn.Linear(d_model, num_classes)
        self.init_weights()

    def init_weights(self) -> None:
        initrange = 0.1
        self.embedding.weight.data.uniform_(-initrange, initrange)
        self.linear.bias.data.zero_()
        self.linear.weight.data.uniform_(-initrange, initrange)

    def forward(self, src: Tensor, src_mask: Tensor | None = None) -> Tensor:
        src = self.embedding(src) * math.sqrt(self.d_model)
        src = self.pos_encoder(src)
        output = self.transformer_encoder(src, src_mask)
        output = output.mean(dim=1)
        return self.linear(output)


@entry("transformer_text", (8,), "pytorch/tutorials beginner_source/transformer_tutorial.py",
       ("int64 tokens", "nn.Embedding * math.sqrt(d_model)", "pe buffer sliced by x.size(1)",
        "nn.TransformerEncoder of post-norm relu TransformerEncoderLayer (batch_first)",
        "optional forward arg src_mask=None", "mean over tokens", "linear"),
       vocab=50, num_classes=4)
def transformer_text() -> nn.Module:
    """Tutorial transformer: vocabulary 50, 8 tokens, d_model 16, 2 heads, FFN 32, 2 layers."""
    return TransformerClassifier(ntoken=50, d_model=16, nhead=2, d_hid=32, nlayers=2,
                                 num_classes=4)


class TimeSeriesTransformer(nn.Module):
    """A pre-norm transformer classifier of float sequences: Linear input projection, a learned
    position parameter, ``nn.TransformerEncoder(norm_first=True, activation="gelu")`` with a
    final LayerNorm, mean pooling (the pattern of the PyTorch forum / tutorial time-series
    classifiers)."""

    def __init__(self, in_features: int, seq_len: int, d_model: int, nhead: int, d_hid: int,
                 nlayers: int, num_classes: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(in_features, d_model)
        self.pos = nn.Parameter(torch.randn(1, seq_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(d_model, nhead, d_hid, dropout=0.1,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, nlayers, norm=nn.LayerNorm(d_model),
                                             enable_nested_tensor=False)
        self.head = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_proj(x) + self.pos
        x = self.encoder(x)
        return self.head(x.mean(dim=1))


@entry("transformer_prenorm", (8, 6), "PyTorch nn.TransformerEncoder usage: norm_first=True, "
       "activation='gelu', final norm (torch/nn/modules/transformer.py)",
       ("nn.TransformerEncoder pre-norm gelu with final LayerNorm", "learned position "
        "parameter add", "linear on the last dim of a 3-D tensor", "mean over tokens"),
       distribution="normal")
def transformer_prenorm() -> nn.Module:
    """Pre-norm transformer classifier: 8 steps of 6 features, d_model 16, 2 heads, 2 layers."""
    return TimeSeriesTransformer(in_features=6, seq_len=8, d_model=16, nhead=2, d_hid=32,
                                 nlayers=2, num_classes=10)


# ------------------------------------------------------------ torchaudio tutorial M5


class M5(nn.Module):
    """pytorch/tutorials intermediate_source/speech_command_classification_with_torchaudio_
    tutorial.py M5: Conv1d/BatchNorm1d/MaxPool1d, ``F.avg_pool1d(x, x.shape[-1])``,
    ``x.permute(0, 2, 1)``, ``F.log_softmax(x, dim=2)``."""

    def __init__(self, n_input: int = 1, n_output: int = 35, stride: int = 16,
                 n_channel: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_input, n_channel, kernel_size=80, stride=stride)
        self.bn1 = nn.BatchNorm1d(n_channel)
        self.pool1 = nn.MaxPool1d(4)
        self.conv2 = nn.Conv1d(n_channel, n_channel, kernel_size=3)
        self.bn2 = nn.BatchNorm1d(n_channel)
        self.pool2 = nn.MaxPool1d(4)
        self.conv3 = nn.Conv1d(n_channel, 2 * n_channel, kernel_size=3)
        self.bn3 = nn.BatchNorm1d(2 * n_channel)
        self.pool3 = nn.MaxPool1d(4)
        self.conv4 = nn.Conv1d(2 * n_channel, 2 * n_channel, kernel_size=3)
        self.bn4 = nn.BatchNorm1d(2 * n_channel)
        self.pool4 = nn.MaxPool1d(4)
        self.fc1 = nn.Linear(2 * n_channel, n_output)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        x = F.relu(self.bn1(x))
        x = self.pool1(x)
        x = self.conv2(x)
        x = F.relu(self.bn2(x))
        x = self.pool2(x)
        x = self.conv3(x)
        x = F.relu(self.bn3(x))
        x = self.pool3(x)
        x = self.conv4(x)
        x = F.relu(self.bn4(x))
        x = self.pool4(x)
        x = F.avg_pool1d(x, x.shape[-1])
        x = x.permute(0, 2, 1)
        x = self.fc1(x)
        return F.log_softmax(x, dim=2)


class SqueezedOutput(nn.Module):
    """``model(x).squeeze(1)``: the tutorial squeezes M5's (B, 1, K) output before its loss;
    nnslicer wants (batch, classes) logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)


@entry("m5_audio", (1, 8000), "pytorch/tutorials intermediate_source/"
       "speech_command_classification_with_torchaudio_tutorial.py (M5)",
       ("Conv1d kernel 80 stride 16", "BatchNorm1d", "MaxPool1d", "F.relu",
        "F.avg_pool1d with kernel x.shape[-1]", "permute", "Linear on a 3-D tensor",
        "log_softmax at the output", "squeeze(1)"), num_classes=35, distribution="normal")
def m5_audio() -> nn.Module:
    """M5 on 8000-sample waveforms (1 s at 8 kHz, as in the tutorial) with 8 channels."""
    return SqueezedOutput(M5(n_input=1, n_output=35, stride=16, n_channel=8))
