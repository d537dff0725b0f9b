"""Generated protocol buffer modules (sources in protos/jaxsaver/_proto/; regenerate with tools/gen_protos.py)."""
