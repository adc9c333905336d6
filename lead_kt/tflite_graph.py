"""Reading and simplifying TFLite (LiteRT) flatbuffers: what lead_kt.quantize needs of a model.

`operators`, `float_parameters` and `multiply_accumulates` read a model for the budget.
`fold_affine` rewrites a float model so that int8 quantization loses little: every per-channel
multiply and add next to a convolution or fully connected layer (a BatchNorm in inference mode, as
litert-converter leaves it: after the layer and a reshape, after a concatenation of such layers,
or before a fully connected layer) is folded into the layers' weights and biases. Quantized apart,
each would be rounded to int8 once more, and a BatchNorm's large shift rounded before it cancels
(the head's BatchNorm of the pooled features lost most of its precision so).
`split_concatenated_dense` gives int8 a scale per part of a fully connected layer's concatenated
input (the benchmark head's max and mean pooling), which a concatenation would force to share.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# The layers whose weights take a folded multiply (output channel axis of their weights).
_OUTPUT_AXIS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}
_AFFINE = ("MUL", "ADD", "SUB")


def _schema():
  from ai_edge_litert import schema_py_generated

  return schema_py_generated


def _operator_names(root) -> list[str]:
  """The builtin operator name of each op of the main graph (flatbuffer or object API root)."""
  schema = _schema()
  names = {code: name for name, code in vars(schema.BuiltinOperator).items() if name.isupper()}
  if isinstance(root, schema.ModelT):
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in root.operatorCodes]
    return [names[codes[op.opcodeIndex]] for op in root.subgraphs[0].operators]
  codes = [root.OperatorCodes(i) for i in range(root.OperatorCodesLength())]
  graph = root.Subgraphs(0)
  return [
    names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())]
    for code in (codes[graph.Operators(i).OpcodeIndex()] for i in range(graph.OperatorsLength()))
  ]


def operators(model: bytes) -> list[str]:
  """The builtin operator names of a TFLite model's main graph, in execution order."""
  return _operator_names(_schema().Model.GetRootAs(model, 0))


def float_parameters(model: bytes) -> int:
  """The number of float32 constants (weights, biases, per-channel factors) of a TFLite model."""
  schema = _schema()
  root = schema.Model.GetRootAs(model, 0)
  graph = root.Subgraphs(0)
  tensors = (graph.Tensors(i) for i in range(graph.TensorsLength()))
  return sum(
    int(np.prod(tensor.ShapeAsNumpy()))
    for tensor in tensors
    if tensor.Type() == schema.TensorType.FLOAT32 and root.Buffers(tensor.Buffer()).DataLength()
  )


def multiply_accumulates(model: bytes) -> int:
  """Multiply-accumulates of one call of a TFLite model (static shapes) in its convolutions and
  fully connected layers: output elements times the weights each output reads."""
  root = _schema().Model.GetRootAs(model, 0)
  graph = root.Subgraphs(0)
  total = 0
  for i, name in enumerate(_operator_names(root)):
    if name not in _OUTPUT_AXIS:
      continue
    operator = graph.Operators(i)
    weights = graph.Tensors(int(operator.Inputs(1))).ShapeAsNumpy()
    outputs = int(np.prod(graph.Tensors(int(operator.Outputs(0))).ShapeAsNumpy()))
    # CONV_2D filters are [out, h, w, in], DEPTHWISE_CONV_2D [1, h, w, out], FC weights [out, in].
    per_output = {
      "CONV_2D": np.prod(weights[1:]),
      "DEPTHWISE_CONV_2D": np.prod(weights[1:3]),
      "FULLY_CONNECTED": weights[-1],
    }[name]
    total += outputs * int(per_output)
  return total


@dataclasses.dataclass
class _Graph:
  """The object API model with the lookups the folds need."""

  root: object

  def __post_init__(self):
    self.graph = self.root.subgraphs[0]
    self.names = _operator_names(self.root)

  def ops(self):
    return list(zip(self.names, self.graph.operators, strict=True))

  def consumers(self, tensor: int) -> list:
    return [op for op in self.graph.operators if tensor in list(op.inputs)]

  def producer(self, tensor: int):
    return next((op for op in self.graph.operators if tensor in list(op.outputs)), None)

  def name(self, op) -> str:
    return self.names[self.graph.operators.index(op)]

  def sole_consumer(self, tensor: int):
    """The one op that reads `tensor`, None if several do or it is a graph output."""
    readers = self.consumers(tensor)
    if len(readers) != 1 or tensor in list(self.graph.outputs):
      return None
    return readers[0]

  def constant(self, tensor: int) -> np.ndarray | None:
    """A float32 constant's value, None for anything else."""
    entry = self.graph.tensors[tensor]
    data = self.root.buffers[entry.buffer].data
    if entry.type != _schema().TensorType.FLOAT32 or data is None or not len(data):
      return None
    shape = [] if entry.shape is None else list(entry.shape)
    return np.frombuffer(np.asarray(data, np.uint8).tobytes(), np.float32).reshape(shape)

  def set_constant(self, tensor: int, value: np.ndarray) -> None:
    """Gives `tensor` a new buffer holding `value` (the old one may be shared)."""
    schema = _schema()
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(value.astype(np.float32).tobytes(), np.uint8)
    self.root.buffers.append(buffer)
    entry = self.graph.tensors[tensor]
    entry.buffer = len(self.root.buffers) - 1
    entry.shape = np.array(value.shape, np.int32)

  def set_input(self, op, position: int, value: np.ndarray, name: bytes) -> None:
    """Makes input `position` of `op` a constant of its own holding `value` (the converter
    shares equal constants, e.g. zero biases, between layers)."""
    schema = _schema()
    entry = schema.TensorT()
    entry.type = schema.TensorType.FLOAT32
    entry.name = name
    self.graph.tensors.append(entry)
    self.set_constant(len(self.graph.tensors) - 1, value)
    inputs = list(op.inputs)
    inputs[position : position + 1] = [len(self.graph.tensors) - 1]
    op.inputs = np.array(inputs, np.int32)

  def remove(self, ops: list, keep: int, dropped: int) -> None:
    """Deletes `ops` and makes the readers of tensor `dropped` (the last one's output) read
    `keep` instead."""
    for op in ops:
      index = self.graph.operators.index(op)
      del self.graph.operators[index], self.names[index]
    for op in self.graph.operators:
      op.inputs = np.where(np.asarray(op.inputs) == dropped, keep, op.inputs).astype(np.int32)
    outputs = np.asarray(self.graph.outputs)
    self.graph.outputs = np.where(outputs == dropped, keep, outputs).astype(np.int32)

  def channel_constant(self, op, operand: int, channels: int) -> np.ndarray | None:
    """The per-channel vector [channels] of an elementwise op whose other input is a constant
    varying along the last axis only (or a scalar); None otherwise."""
    inputs = list(op.inputs)
    if len(inputs) != 2 or operand not in inputs:
      return None
    value = self.constant(inputs[1 - inputs.index(operand)])
    if value is None or value.size not in (1, channels):
      return None
    if value.ndim and value.shape[-1] != value.size:
      return None
    return np.broadcast_to(value.reshape(-1), (channels,)).astype(np.float64)


def _activation(op) -> int:
  options = op.builtinOptions
  return getattr(options, "fusedActivationFunction", 0) if options is not None else 0


def _weights_and_bias(graph: _Graph, layer, channels: int) -> tuple[np.ndarray, np.ndarray]:
  """A layer's weights and its bias (zeros where it has none), float64."""
  inputs = list(layer.inputs)
  bias = graph.constant(inputs[2]) if len(inputs) > 2 and inputs[2] >= 0 else None
  weights = graph.constant(inputs[1]).astype(np.float64)
  return weights, np.zeros(channels) if bias is None else bias.astype(np.float64)


def _set_weights_and_bias(graph: _Graph, layer, weights: np.ndarray, bias: np.ndarray) -> None:
  name = graph.graph.tensors[int(layer.inputs[1])].name
  graph.set_input(layer, 1, weights, name + b"/folded")
  if len(layer.inputs) < 3:
    layer.inputs = np.array([*layer.inputs, -1], np.int32)
  graph.set_input(layer, 2, bias, name + b"/folded_bias")


def _layer_before(graph: _Graph, tensor: int):
  """The layer (name, op) without activation and with constant weights whose output `tensor`
  is, directly or through one reshape that keeps the channels last, nothing else reading it."""
  op = graph.producer(tensor)
  if op is not None and graph.name(op) == "RESHAPE" and graph.sole_consumer(tensor) is not None:
    inner = int(op.inputs[0])
    if graph.graph.tensors[inner].shape[-1] == graph.graph.tensors[tensor].shape[-1]:
      tensor, op = inner, graph.producer(inner)
  if op is None or graph.name(op) not in _OUTPUT_AXIS or graph.sole_consumer(tensor) is None:
    return None
  if _activation(op) or graph.constant(op.inputs[1]) is None:
    return None
  return graph.name(op), op


def _fold_after(graph: _Graph, op) -> bool:
  """Folds the multiplies and adds (SUB of a constant) that follow a layer, or a concatenation
  of layers along the channels (inception's branches), through a reshape that keeps the channels
  last, into the weights and biases; returns whether it folded any."""
  tensor = int(op.outputs[0])
  if graph.name(op) == "CONCATENATION":
    rank = len(graph.graph.tensors[tensor].shape)
    if op.builtinOptions.axis % rank != rank - 1 or _activation(op):
      return False
    layers = [_layer_before(graph, int(t)) for t in op.inputs]
    if None in layers:
      return False
  else:
    reader = graph.sole_consumer(tensor)
    if reader is not None and graph.name(reader) == "RESHAPE":
      tensor = int(reader.outputs[0])
    layers = [_layer_before(graph, tensor)]
    if layers[0] is None or layers[0][1] is not op:
      return False
  keep, channels = tensor, int(graph.graph.tensors[tensor].shape[-1])
  scale, shift, folded, activation = np.ones(channels), np.zeros(channels), [], 0
  while not activation and (reader := graph.sole_consumer(tensor)) is not None:
    kind = graph.name(reader)
    value = graph.channel_constant(reader, tensor, channels) if kind in _AFFINE else None
    if value is None or kind == "SUB" and list(reader.inputs)[0] != tensor:
      break
    if int(reader.outputs[0]) in list(graph.graph.outputs):
      break  # The signature names the graph's outputs: they stay.
    if kind == "MUL":
      scale, shift = scale * value, shift * value
    else:
      shift = shift + (value if kind == "ADD" else -value)
    folded.append(reader)
    activation, tensor = _activation(reader), int(reader.outputs[0])
  if not folded:
    return False
  first = 0
  for name, layer in layers:
    width = int(graph.graph.tensors[int(layer.outputs[0])].shape[-1])
    weights, bias = _weights_and_bias(graph, layer, width)
    shape = [1] * weights.ndim
    shape[_OUTPUT_AXIS[name]] = width
    part = slice(first, first + width)
    _set_weights_and_bias(
      graph, layer, weights * scale[part].reshape(shape), bias * scale[part] + shift[part]
    )
    if activation:  # Elementwise, so before the reshape or the concatenation as after.
      layer.builtinOptions.fusedActivationFunction = activation
    first += width
  graph.remove(folded, keep, tensor)
  return True


def _fold_before(graph: _Graph, layer) -> bool:
  """Folds the multiplies and adds that compute a fully connected layer's input from another
  tensor (nothing else reading them) into its weights and bias; returns whether it folded any."""
  weights = graph.constant(layer.inputs[1])
  if weights is None:
    return False
  features = weights.shape[-1]
  tensor = int(layer.inputs[0])
  # The layer's input is tensor * scale + shift, for the tensor reached so far.
  scale, shift, folded = np.ones(features), np.zeros(features), []
  while (op := graph.producer(tensor)) is not None and graph.sole_consumer(tensor) is not None:
    kind = graph.name(op)
    operand = next((int(t) for t in op.inputs if graph.constant(t) is None), None)
    value = graph.channel_constant(op, operand, features) if kind in _AFFINE else None
    if value is None or _activation(op) or kind == "SUB" and list(op.inputs)[0] != operand:
      break
    if kind == "MUL":
      scale = scale * value
    else:
      shift = shift + (value if kind == "ADD" else -value) * scale
    folded.append(op)
    tensor = operand
  if not folded:
    return False
  _, bias = _weights_and_bias(graph, layer, weights.shape[0])
  _set_weights_and_bias(graph, layer, weights * scale, bias + weights @ shift)
  layer.inputs = np.array([tensor, *list(layer.inputs)[1:]], np.int32)
  for op in folded:
    index = graph.graph.operators.index(op)
    del graph.graph.operators[index], graph.names[index]
  return True


def _drop_unused(graph: _Graph) -> None:
  """Removes the tensors, buffers and operator codes that no op uses any more: TFLite-Micro plans
  arena memory for every tensor without data, and LiteRT's calibrator resolves every code."""
  ops, root = graph.graph.operators, graph.root
  used = sorted(
    {int(t) for op in ops for t in (*op.inputs, *op.outputs) if t >= 0}
    | {int(t) for t in (*graph.graph.inputs, *graph.graph.outputs)}
  )
  tensor_index = {old: new for new, old in enumerate(used)}
  graph.graph.tensors = [graph.graph.tensors[t] for t in used]
  for op in ops:
    op.inputs = np.array([tensor_index.get(int(t), -1) for t in op.inputs], np.int32)
    op.outputs = np.array([tensor_index[int(t)] for t in op.outputs], np.int32)
  for key in ("inputs", "outputs"):
    indices = [tensor_index[int(t)] for t in getattr(graph.graph, key)]
    setattr(graph.graph, key, np.array(indices, np.int32))
    for signature in root.signatureDefs or ():
      for entry in getattr(signature, key):
        entry.tensorIndex = tensor_index[entry.tensorIndex]
  # Buffer 0 is the empty buffer that tensors without data point to.
  buffers = sorted({0} | {tensor.buffer for tensor in graph.graph.tensors})
  buffer_index = {old: new for new, old in enumerate(buffers)}
  root.buffers = [root.buffers[b] for b in buffers]
  for tensor in graph.graph.tensors:
    tensor.buffer = buffer_index[tensor.buffer]
  codes = sorted({op.opcodeIndex for op in ops})
  root.operatorCodes = [root.operatorCodes[code] for code in codes]
  for op in ops:
    op.opcodeIndex = codes.index(op.opcodeIndex)


def _new_tensor(graph: _Graph, like: int, name: bytes) -> int:
  """A new float32 activation tensor of the shape of tensor `like`."""
  schema = _schema()
  entry = schema.TensorT()
  entry.type, entry.name, entry.buffer = schema.TensorType.FLOAT32, name, 0
  entry.shape = np.array(graph.graph.tensors[like].shape, np.int32)
  graph.graph.tensors.append(entry)
  return len(graph.graph.tensors) - 1


def _opcode(graph: _Graph, name: str) -> int:
  """The index of builtin operator `name`'s code, added when the model has none."""
  schema = _schema()
  code = getattr(schema.BuiltinOperator, name)
  for index, entry in enumerate(graph.root.operatorCodes):
    if max(entry.builtinCode, entry.deprecatedBuiltinCode) == code:
      return index
  entry = schema.OperatorCodeT()
  entry.builtinCode = entry.deprecatedBuiltinCode = code
  graph.root.operatorCodes.append(entry)
  return len(graph.root.operatorCodes) - 1


def _split_dense(graph: _Graph, layer) -> bool:
  """Replaces a fully connected layer over a concatenation of features (the benchmark head's
  max and mean pooling) by one layer per part, summed; returns whether it did."""
  schema = _schema()
  concatenation = graph.producer(int(layer.inputs[0]))
  weights = graph.constant(layer.inputs[1])
  if concatenation is None or graph.name(concatenation) != "CONCATENATION" or weights is None:
    return False
  output = int(concatenation.outputs[0])
  rank = len(graph.graph.tensors[output].shape)
  if concatenation.builtinOptions.axis % rank != rank - 1 or _activation(concatenation):
    return False
  if graph.sole_consumer(output) is not layer or rank != 2:
    return False
  _, bias = _weights_and_bias(graph, layer, weights.shape[0])
  name = graph.graph.tensors[int(layer.inputs[1])].name
  position = graph.graph.operators.index(layer)
  new_ops, total, first = [], None, 0
  for part, source in enumerate(int(t) for t in concatenation.inputs):
    width = int(graph.graph.tensors[source].shape[-1])
    dense = schema.OperatorT()
    dense.opcodeIndex = layer.opcodeIndex
    dense.builtinOptionsType = schema.BuiltinOptions.FullyConnectedOptions
    dense.builtinOptions = schema.FullyConnectedOptionsT()
    dense.inputs = np.array([source, -1, -1], np.int32)
    graph.set_input(dense, 1, weights[:, first : first + width], name + b"/part%d" % part)
    graph.set_input(dense, 2, bias if part == 0 else 0 * bias, name + b"/part%d_bias" % part)
    partial = _new_tensor(graph, int(layer.outputs[0]), name + b"/part%d_out" % part)
    dense.outputs = np.array([partial], np.int32)
    new_ops.append(("FULLY_CONNECTED", dense))
    if total is not None:
      add = schema.OperatorT()
      add.opcodeIndex = _opcode(graph, "ADD")
      add.builtinOptionsType = schema.BuiltinOptions.AddOptions
      add.builtinOptions = schema.AddOptionsT()
      summed = _new_tensor(graph, int(layer.outputs[0]), name + b"/sum%d" % part)
      add.inputs, add.outputs = np.array([total, partial], np.int32), np.array([summed], np.int32)
      new_ops.append(("ADD", add))
      partial = summed
    total, first = partial, first + width
  # The last sum is the layer's output, with the layer's activation.
  last = new_ops[-1][1]
  last.outputs = np.array(layer.outputs, np.int32)
  last.builtinOptions.fusedActivationFunction = _activation(layer)
  for op in (layer, concatenation):
    index = graph.graph.operators.index(op)
    del graph.graph.operators[index], graph.names[index]
    position = min(position, index)
  graph.graph.operators[position:position] = [op for _, op in new_ops]
  graph.names[position:position] = [kind for kind, _ in new_ops]
  return True


def _rewritten(model: bytes, rewrite) -> bytes:
  """`model` after `rewrite(graph) -> bool` is applied until it returns False, without what no
  op uses any more."""
  import flatbuffers

  graph = _Graph(_schema().ModelT.InitFromPackedBuf(model, 0))
  while rewrite(graph):
    pass
  _drop_unused(graph)
  builder = flatbuffers.Builder(len(model))
  builder.Finish(graph.root.Pack(builder), file_identifier=b"TFL3")
  return bytes(builder.Output())


def fold_affine(model: bytes) -> bytes:
  """The float TFLite model with its per-channel multiplies and adds folded into the adjacent
  convolutions and fully connected layers (module docstring); the same function."""

  def fold_one(graph: _Graph) -> bool:
    return any(
      (name in _OUTPUT_AXIS or name == "CONCATENATION")
      and _fold_after(graph, op)
      or name == "FULLY_CONNECTED"
      and _fold_before(graph, op)
      for name, op in graph.ops()
    )

  return _rewritten(model, fold_one)


def split_concatenated_dense(model: bytes) -> bytes:
  """The float TFLite model with each fully connected layer over a concatenation split into one
  layer per concatenated part, summed: the same function, but int8 gives each part its own scale
  (a concatenation forces one on all: the benchmark head's mean-pooled features, several times
  smaller than the max-pooled ones, lost most of their precision)."""
  return _rewritten(
    model,
    lambda graph: any(
      name == "FULLY_CONNECTED" and _split_dense(graph, op) for name, op in graph.ops()
    ),
  )
