"""Layer 6, interface: how people use percept. The command line (``cli`` and its ``cli_*`` helpers), the
Gradio app (``app``, ``app_models``) and the numbered notebooks' helpers (``notebooks``, ``notebook_*``).
"""
