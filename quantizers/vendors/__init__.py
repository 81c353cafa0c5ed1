"""ExecuTorch's vendor quantizers (and NNCF's), each a backend users pick by name.

One module per vendor, each a ``BACKEND = Backend(...)`` named in the ``pt2e_quant.backends``
entry points of ``pyproject.toml``: ``quantize(model, x, backend="qnn")`` and the CLI's
``--backend qnn`` build the vendor's recommended quantizer. The vendor's package is imported
inside ``preset`` (and ``write_pte``) only, so listing the backends costs nothing and a missing
package is reported by :mod:`.requirements` with the command that installs it.

========================  ====================================================================
``arm``                   ``TOSAQuantizer`` for TOSA-1.0+INT, symmetric int8 (tosa-tools)
``cadence``               ``CadenceDefaultQuantizer`` (strict export, as Cadence's compiler)
``coreml``                ``CoreMLQuantizer``: uint8 activations, int8 per-channel weights
``cortex_m``              ``CortexMQuantizer`` (int8, per-channel convs; tosa-tools)
``executorch_xnnpack``    ExecuTorch's own ``XNNPACKQuantizer`` (our ``xnnpack`` re-implements it)
``mediatek``              ``NeuropilotQuantizer`` A8W8 (MediaTek's NeuroPilot SDK, not on PyPI)
``nxp``                   ``NeutronQuantizer`` for i.MX RT700 (NXP's eIQ Neutron SDK, not on PyPI)
``openvino``              ``OpenVINOQuantizer`` INT8_SYM (nncf + openvino)
``qnn``                   ``QnnQuantizer`` 8a8w, per-channel conv and linear
``samsung``               ``EnnQuantizer`` A8W8, per-channel
``vulkan``                ``VulkanQuantizer``: int8 weight-only linear (dynamic a8w8 with dynamic)
========================  ====================================================================
"""
