"""Settings, score rules, decoding state, greedy, beam and speculative search, generate().
Imports encdec.nn and encdec.base."""
