// Kept in code (not read from package.json) so the compiled output does not depend on the file layout.
export const VERSION = '0.1.0';
