// Money on the page: typed text -> integer cents, and integer cents -> text.
//
// Amounts never pass through a floating-point number: the digits are read as a string and the
// cents are built with BigInt, so "0,10" is exactly 10 cents and "1.234,56" exactly 123456.
// Portuguese writes R$ 1.234,56 (dot groups, comma decimals); English writes 1,234.56.

// The most one amount may be: the API's bound (bank.ledger.AMOUNT_CENTS_MAX), R$ 1.000.000.000,00.
export const AMOUNT_CENTS_MAX = 100_000_000_000;

const SEPARATORS = {
  pt: { group: ".", decimal: "," },
  en: { group: ",", decimal: "." },
};

function separators(lang) {
  return SEPARATORS[lang] || SEPARATORS.en;
}

// parseMoney(text, lang) -> {cents: number} or {error: "money_empty" | "money_invalid" |
// "money_fraction" | "money_zero" | "money_too_large"}; error values are i18n keys.
export function parseMoney(text, lang) {
  const { group, decimal } = separators(lang);
  let s = String(text ?? "").trim();
  s = s.replace(/^R\$\s*/i, "").replace(/\s+/g, "");
  if (s === "") return { error: "money_empty" };
  if (s.startsWith("-")) return { error: "money_invalid" };
  const parts = s.split(decimal);
  if (parts.length > 2) return { error: "money_invalid" };
  let [whole, fraction = null] = parts;
  if (fraction !== null && !/^\d{0,2}$/.test(fraction)) {
    return { error: /^\d+$/.test(fraction) ? "money_fraction" : "money_invalid" };
  }
  if (whole === "") whole = "0";
  if (whole.includes(group)) {
    // Group separators are accepted only where they belong: 1.234.567 but not 12.34.
    const groups = whole.split(group);
    const ok = /^\d{1,3}$/.test(groups[0]) && groups.slice(1).every((g) => /^\d{3}$/.test(g));
    if (!ok) return { error: "money_invalid" };
    whole = groups.join("");
  }
  if (!/^\d+$/.test(whole)) return { error: "money_invalid" };
  const cents = BigInt(whole) * 100n + BigInt((fraction ?? "").padEnd(2, "0"));
  if (cents === 0n) return { error: "money_zero" };
  if (cents > BigInt(AMOUNT_CENTS_MAX)) return { error: "money_too_large" };
  return { cents: Number(cents) };
}

// formatMoney(cents, lang) -> "R$ 1.234,56" (pt) or "R$ 1,234.56" (en); cents is an integer.
export function formatMoney(cents, lang, { symbol = true } = {}) {
  const { group, decimal } = separators(lang);
  let value = BigInt(cents);
  const negative = value < 0n;
  if (negative) value = -value;
  const whole = (value / 100n).toString();
  const fraction = (value % 100n).toString().padStart(2, "0");
  const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, group);
  const text = `${grouped}${decimal}${fraction}`;
  return `${negative ? "-" : ""}${symbol ? "R$ " : ""}${text}`;
}
