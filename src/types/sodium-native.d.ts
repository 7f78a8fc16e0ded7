// The two Poly1305 calls dmctl uses from sodium-native (the package ships no types).
declare module 'sodium-native' {
  export function crypto_onetimeauth(out: Uint8Array, input: Uint8Array, key: Uint8Array): void;
  export function crypto_onetimeauth_verify(mac: Uint8Array, input: Uint8Array, key: Uint8Array): boolean;
  const sodium: { crypto_onetimeauth: typeof crypto_onetimeauth; crypto_onetimeauth_verify: typeof crypto_onetimeauth_verify };
  export default sodium;
}
