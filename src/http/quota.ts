/**
 * Token bucket: `rate` requests per second with a one-second burst (at least one request, so that a
 * quota split across more workers than requests per second still admits its share).
 */
export class RateLimiter {
  private readonly capacity: number;
  private tokens: number;
  private last = Date.now();

  constructor(private readonly rate: number) {
    this.capacity = Math.max(1, rate);
    this.tokens = this.capacity;
  }

  tryTake(now = Date.now()): boolean {
    // Date.now() is wall-clock time: a step back (NTP) must not take tokens away.
    const elapsed = Math.max(0, now - this.last);
    this.tokens = Math.min(this.capacity, this.tokens + (elapsed / 1000) * this.rate);
    this.last = now;
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }
}
