"""Content-addressable stores for large payloads (DESIGN section 6).

The backends come with the CAS work.
"""
