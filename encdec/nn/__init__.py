"""The model core: config and FAMILIES, layers, CPU kernels, packing, backbone, loss. Imports only encdec.base."""
