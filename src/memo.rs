//! Tool-call memoization (placeholder until the action cache lands).
