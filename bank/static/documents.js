// Brazilian documents: CPF (persons, 11 digits) and CNPJ (companies, 14 digits).
//
// The bank checks them too; checking here lets the page say what is wrong before a request.

export function digitsOnly(text) {
  return String(text ?? "").replace(/\D/g, "");
}

function cpfValid(d) {
  if (!/^\d{11}$/.test(d) || /^(\d)\1{10}$/.test(d)) return false;
  for (const length of [9, 10]) {
    let sum = 0;
    for (let i = 0; i < length; i++) sum += Number(d[i]) * (length + 1 - i);
    const check = ((sum * 10) % 11) % 10;
    if (check !== Number(d[length])) return false;
  }
  return true;
}

function cnpjValid(d) {
  if (!/^\d{14}$/.test(d) || /^(\d)\1{13}$/.test(d)) return false;
  const weights = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2];
  for (const length of [12, 13]) {
    let sum = 0;
    const w = weights.slice(13 - length);
    for (let i = 0; i < length; i++) sum += Number(d[i]) * w[i];
    const rest = sum % 11;
    const check = rest < 2 ? 0 : 11 - rest;
    if (check !== Number(d[length])) return false;
  }
  return true;
}

// documentKind("123.456.789-09") -> "cpf" | "cnpj" | null (null when not a valid document)
export function documentKind(text) {
  const d = digitsOnly(text);
  if (d.length === 11) return cpfValid(d) ? "cpf" : null;
  if (d.length === 14) return cnpjValid(d) ? "cnpj" : null;
  return null;
}

export function formatDocument(text) {
  const d = digitsOnly(text);
  if (d.length === 11) return `${d.slice(0, 3)}.${d.slice(3, 6)}.${d.slice(6, 9)}-${d.slice(9)}`;
  if (d.length === 14) {
    return `${d.slice(0, 2)}.${d.slice(2, 5)}.${d.slice(5, 8)}/${d.slice(8, 12)}-${d.slice(12)}`;
  }
  return d;
}
