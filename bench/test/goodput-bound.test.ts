import { goodputBound } from '../lib/overload';

/** The bench's open-loop bound (bench/README.md, "The cost of a refusal"): what no admission policy can beat. */
describe('goodputBound', () => {
  it('is the share of capacity left for 200s once every offered request is read and refused', () => {
    expect(goodputBound(2, 0.2)).toBeCloseTo(0.75); // (1 - 0.4) / 0.8
    expect(goodputBound(3, 0.09)).toBeCloseTo(0.8, 2); // issue 11's bar needs refusals this cheap
    expect(goodputBound(3, 0.1)).toBeLessThan(0.8);
  });

  it('is 0 when reading and refusing the offer alone exceeds the CPU, and never more than the offer or capacity', () => {
    expect(goodputBound(3, 0.46)).toBe(0);
    expect(goodputBound(3, 1.2)).toBe(0);
    expect(goodputBound(3, 0)).toBe(1);
    expect(goodputBound(0.5, 0.3)).toBe(0.5);
    expect(goodputBound(1, 0.9)).toBe(1);
  });
});
