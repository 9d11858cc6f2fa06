// autocannon ships no types, and @types/autocannon describes 7.x while the bench drives 9.x (and some of
// its client's internals): bench/lib/load.ts states the parts it uses.
declare module 'autocannon';
