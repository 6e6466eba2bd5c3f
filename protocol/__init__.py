"""The STAN wire protocol: messages, subjects, validation rules and error texts.

Pure code: no sockets, no clocks, no threads.
"""
